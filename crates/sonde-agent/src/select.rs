//! `[exporters.<name>.select]`: which metrics one exporter sends, read into a
//! [`sonde_core::Selection`], and the lean default of the CloudWatch exporter.
//!
//! ```toml
//! # One rule (a table) or several ([[...select]] entries, the first that takes a metric decides).
//! [[exporters.cloudwatch.select]]
//! include = ["system.cpu.utilization", "system.network.io"]  # globs; "/regex/" for a regex
//! drop_labels = ["cpu", "device"]      # removed, series that become equal are aggregated
//! gauges = "mean"                      # how gauges aggregate: mean, sum, min or max
//!
//! [[exporters.cloudwatch.select]]
//! exclude = ["system.*", "process.*", "sonde.*"]
//! labels = { env = ["prod", "staging"], "network.interface.name" = ["!lo"] }
//! # series whose label matches one of the values and none of the "!" ones
//! ```

use std::ops::Range;

use sonde_core::{GaugeAggregation, Pattern, Rule, Selection};
use toml_edit::{Item, Table, Value};

/// The keys of one rule.
pub const RULE_KEYS: &[&str] = &[
    "include",
    "exclude",
    "without_labels",
    "with_labels",
    "labels",
    "drop_labels",
    "keep_labels",
    "gauges",
];

/// A problem in a `select` entry: where (byte span in the file), what, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Byte span of the offending item.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

impl Problem {
    /// A problem at `span`: `message` says what is wrong, `hint` what to do.
    pub fn new(
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Problem {
            span,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Reads `item` (the value of a `select` key under `[exporters.<path>]`). Every problem is
/// collected; what could be read is returned too, so other errors are still reported.
pub fn parse(item: &Item, path: &str) -> (Selection, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut selection = Selection::new();
    let mut add = |t: &Table, at: String, problems: &mut Vec<Problem>| {
        if let Some(rule) = parse_rule(t, &at, problems) {
            selection = std::mem::take(&mut selection).rule(rule);
        }
    };
    match item {
        Item::Table(t) => add(t, format!("{path}.select"), &mut problems),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                add(t, format!("{path}.select[{i}]"), &mut problems);
            }
        }
        Item::Value(Value::InlineTable(t)) => {
            let t = t.clone().into_table();
            add(&t, format!("{path}.select"), &mut problems);
        }
        other => problems.push(Problem::new(
            other.span(),
            format!("`{path}.select` must be a table or a list of tables"),
            format!(
                "write it as [{path}.select] (one rule) or [[{path}.select]] entries (the first rule that takes a metric decides)"
            ),
        )),
    }
    (selection, problems)
}

fn parse_rule(t: &Table, at: &str, problems: &mut Vec<Problem>) -> Option<Rule> {
    let before = problems.len();
    for (key, _) in t.iter() {
        if !RULE_KEYS.contains(&key) {
            let (message, hint) =
                sonde_core::diag::unknown_key(key, RULE_KEYS, Some(&format!("[{at}]")));
            problems.push(Problem::new(
                t.key(key).and_then(|k| k.span()),
                message,
                hint,
            ));
        }
    }
    let mut rule = Rule::new();
    if let Some(item) = t.get("include") {
        rule = rule.include(patterns(item, &format!("{at}.include"), problems));
    }
    if let Some(item) = t.get("exclude") {
        rule = rule.exclude(patterns(item, &format!("{at}.exclude"), problems));
    }
    if let Some(item) = t.get("without_labels") {
        rule = rule.without_labels(strings(item, &format!("{at}.without_labels"), problems));
    }
    if let Some(item) = t.get("with_labels") {
        rule = rule.with_labels(strings(item, &format!("{at}.with_labels"), problems));
    }
    if let Some(item) = t.get("labels") {
        for (label, any, none) in label_conditions(item, &format!("{at}.labels"), problems) {
            if !any.is_empty() {
                rule = rule.label(label.clone(), any);
            }
            if !none.is_empty() {
                rule = rule.label_not(label, none);
            }
        }
    }
    let drop = t.get("drop_labels");
    let keep = t.get("keep_labels");
    if let Some(item) = drop {
        rule = rule.drop_labels(strings(item, &format!("{at}.drop_labels"), problems));
    }
    if let Some(item) = keep {
        if drop.is_some() {
            problems.push(Problem::new(
                item.span(),
                format!("[{at}] has both `drop_labels` and `keep_labels`"),
                "use one: drop_labels lists what goes, keep_labels what stays",
            ));
        }
        rule = rule.keep_labels(strings(item, &format!("{at}.keep_labels"), problems));
    }
    if let Some(item) = t.get("gauges") {
        match item.as_str().and_then(GaugeAggregation::parse) {
            Some(how) => rule = rule.gauges(how),
            None => problems.push(Problem::new(
                item.span(),
                format!("`{at}.gauges` must be \"mean\", \"sum\", \"min\" or \"max\""),
                "mean suits utilizations and ratios, sum suits sizes split by a dropped label",
            )),
        }
    }
    (problems.len() == before).then_some(rule)
}

/// Records that `item` is not what its key takes (`message`, `hint`): nothing is read from it.
fn rejected<T>(problems: &mut Vec<Problem>, item: &Item, message: String, hint: &str) -> Vec<T> {
    problems.push(Problem::new(item.span(), message, hint));
    Vec::new()
}

/// A list of strings (a lone string is a list of one).
fn strings(item: &Item, at: &str, problems: &mut Vec<Problem>) -> Vec<String> {
    let values: Vec<&Value> = match item {
        Item::Value(Value::Array(a)) => a.iter().collect(),
        Item::Value(v @ Value::String(_)) => vec![v],
        other => {
            return rejected(
                problems,
                other,
                format!("`{at}` must be a list of strings"),
                "like [\"system.cpu.*\", \"http.server.*\"]",
            );
        }
    };
    let mut out = Vec::new();
    for v in values {
        match v.as_str() {
            Some(s) => out.push(s.to_owned()),
            None => problems.push(Problem::new(
                v.span(),
                format!("the entries of `{at}` must be strings"),
                "put each one in double quotes",
            )),
        }
    }
    out
}

/// Patterns: globs, or `/regex/` compiled here (the one compilation start-up uses).
fn patterns(item: &Item, at: &str, problems: &mut Vec<Problem>) -> Vec<Pattern> {
    let span = item.span();
    strings(item, at, problems)
        .into_iter()
        .filter_map(|s| match pattern(&s) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(bad_regex(span.clone(), &s, at, &e));
                None
            }
        })
        .collect()
}

fn bad_regex(span: Option<Range<usize>>, s: &str, at: &str, e: &str) -> Problem {
    Problem::new(
        span,
        format!(
            "`{}` in `{at}` is not a valid regular expression: {}",
            sonde_core::diag::shorten(s, 64),
            sonde_core::diag::shorten(e, 200)
        ),
        "write a glob (`*` any characters, `?` one) or /regex/ (Rust regex syntax, anchored with ^ and $ as you need)",
    )
}

/// A glob, or a regular expression between slashes.
pub fn pattern(s: &str) -> Result<Pattern, String> {
    match s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
        Some(re) if s.len() >= 2 => {
            let compiled = regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Pattern::predicate(s, move |v| compiled.is_match(v)))
        }
        _ => Ok(Pattern::glob(s)),
    }
}

/// `label = values`: the patterns to match one of, and those (written `!pattern`) to match
/// none of.
#[allow(clippy::type_complexity)]
fn label_conditions(
    item: &Item,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(String, Vec<Pattern>, Vec<Pattern>)> {
    let pairs: Vec<(String, Item)> = match item {
        Item::Table(t) => t.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect(),
        Item::Value(Value::InlineTable(t)) => t
            .iter()
            .map(|(k, v)| (k.to_owned(), Item::Value(v.clone())))
            .collect(),
        other => {
            return rejected(
                problems,
                other,
                format!("`{at}` must be a table of label = values"),
                "like { state = [\"used\", \"free\"], device = \"sd*\" }",
            );
        }
    };
    pairs
        .into_iter()
        .map(|(label, values)| {
            let at = format!("{at}.{label}");
            let (mut any, mut none) = (Vec::new(), Vec::new());
            for s in strings(&values, &at, problems) {
                let (negated, text) = match s.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, s.as_str()),
                };
                match pattern(text) {
                    Ok(p) if negated => none.push(p),
                    Ok(p) => any.push(p),
                    Err(e) => problems.push(bad_regex(values.span(), text, &at, &e)),
                }
            }
            (label, any, none)
        })
        .collect()
}

/// The CloudWatch exporter's selection when its config has none, for an agent that scrapes
/// `scrape_jobs`: the host in a dozen metrics (CPU utilization by mode averaged over CPUs,
/// memory and filesystem used ratio, disk busy time per device, network bytes summed over
/// interfaces but loopback) and every metric that is neither the host's nor the agent's own
/// (StatsD, probes, procstat, and what services push over OTLP, without the `instance`
/// dimension: a new id per process start would be a new CloudWatch metric). The scrape jobs'
/// metrics and `target_info` are left out: a node_exporter alone is hundreds of metrics;
/// select them by name. `include = ["*"]` sends everything.
pub fn cloudwatch_default_for(scrape_jobs: &[String]) -> Selection {
    use sonde_host as h;
    let globs = |g: &[&str]| g.iter().map(|s| Pattern::glob(*s)).collect::<Vec<_>>();
    Selection::new()
        .rule(
            Rule::new()
                .include(globs(&[h::CPU_UTILIZATION]))
                .label(
                    h::CPU_MODE_LABEL,
                    globs(&["user", "system", "iowait", "steal", "idle"]),
                )
                .drop_labels([h::CPU_LOGICAL_NUMBER_LABEL]),
        )
        .rule(
            Rule::new()
                .include(globs(&[h::NETWORK_IO]))
                .label_not(h::NETWORK_INTERFACE_LABEL, globs(&["lo"]))
                .drop_labels([h::NETWORK_INTERFACE_LABEL]),
        )
        .rule(
            Rule::new()
                .include(globs(&[h::MEMORY_UTILIZATION]))
                .label(h::MEMORY_STATE_LABEL, globs(&["used"])),
        )
        .rule(
            Rule::new()
                .include(globs(&[h::FILESYSTEM_UTILIZATION]))
                .label(h::FILESYSTEM_STATE_LABEL, globs(&["used"])),
        )
        .rule(Rule::new().include(globs(&[h::DISK_IO_TIME])))
        .rule(
            Rule::new()
                .exclude(globs(&[
                    "system.*",
                    "process.*",
                    "sonde.*",
                    "target_info",
                    "up",
                ]))
                .with_labels(["job", "instance"])
                .label_not(
                    "job",
                    scrape_jobs.iter().map(|j| {
                        let job = j.clone();
                        Pattern::predicate(j.clone(), move |v| v == job)
                    }),
                )
                .drop_labels(["instance"]),
        )
        .rule(
            Rule::new()
                .exclude(globs(&["system.*", "process.*", "sonde.*"]))
                .without_labels(["job", "instance"]),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Selection, Vec<Problem>) {
        let doc: toml_edit::Document<String> = text.parse().unwrap();
        parse(&doc["select"], "exporters.otlp")
    }

    #[test]
    fn one_rule_or_many_and_regexes() {
        let (s, p) =
            read("[select]\ninclude = [\"system.*\", \"/^http\\\\./\"]\ndrop_labels = [\"cpu\"]\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.rules().len(), 1);
        assert!(s.selects("system.cpu.time") && s.selects("http.server.request.duration"));
        assert!(!s.selects("xhttp.x"));
        let (s, p) = read(
            "[[select]]\ninclude = \"a.*\"\n[[select]]\nexclude = [\"b.*\"]\ngauges = \"max\"\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.rules().len(), 2);
        assert!(s.selects("c") && !s.selects("b.x"));
    }

    #[test]
    fn problems_are_located_and_explained() {
        let (_, p) = read(
            "[select]\ninclde = [\"a\"]\ninclude = [\"/(/\"]\ngauges = \"avg\"\ndrop_labels = [1]\nkeep_labels = [\"x\"]\nlabels = 3\n",
        );
        let messages: Vec<&str> = p.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(p.len(), 6, "{messages:#?}");
        assert!(p.iter().all(|p| p.span.is_some()));
        assert!(p[0].hint.contains("did you mean `include`"));
        assert!(
            messages
                .iter()
                .any(|m| m.contains("not a valid regular expression"))
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("both `drop_labels` and `keep_labels`"))
        );
        assert!(messages.iter().any(|m| m.contains("\"mean\", \"sum\"")));
        let (_, p) = read("select = 3\n");
        assert_eq!(p.len(), 1);
        // A regex too big to compile is refused, not built.
        let (_, p) = read("[select]\ninclude = [\"/a{1000}{1000}{1000}/\"]\n");
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn the_cloudwatch_default_keeps_pushed_metrics_and_leaves_scraped_ones_out() {
        use sonde_core::{Registry, Temporality, testing};
        let registry = Registry::new();
        let pushed =
            testing::labelled_counter(&registry, "checkout.orders", &["region", "job", "instance"]);
        pushed.with(&["eu", "checkout", "pod-1"]).add(2);
        pushed.with(&["eu", "checkout", "pod-2"]).add(3);
        // Scraped series carry `job` and `instance`: one gauge series each.
        let set_gauge = |name: &str, labels: &[(&'static str, &str)], v: i64| {
            let (names, values): (Vec<&'static str>, Vec<&str>) = labels.iter().copied().unzip();
            testing::family(registry.gauge(name.to_owned()).labels(names))
                .with(&values)
                .set(v);
        };
        set_gauge(
            "node_memory_MemTotal_bytes",
            &[("job", "node"), ("instance", "localhost:9100")],
            7,
        );
        set_gauge(
            "target_info",
            &[
                ("job", "checkout"),
                ("instance", "pod-1"),
                ("service.version", "2.1.0"),
            ],
            1,
        );
        testing::handle(registry.counter("jobs.done")).add(1);
        let snap = registry
            .reader(Temporality::Delta)
            .with_selection(cloudwatch_default_for(&["node".to_owned()]))
            .collect();
        let names: Vec<&str> = snap
            .families
            .iter()
            .filter(|f| !f.series.is_empty())
            .map(|f| f.meta.name())
            .filter(|n| !n.starts_with("sonde."))
            .collect();
        assert_eq!(names, ["checkout.orders", "jobs.done"], "{snap:?}");
        let orders = snap
            .families
            .iter()
            .find(|f| f.meta.name() == "checkout.orders")
            .unwrap();
        let labels: Vec<&str> = orders.meta.label_names().collect();
        assert_eq!(labels, ["region", "job"], "instance aggregated away");
        assert_eq!(orders.series.len(), 1);
        assert_eq!(
            snap.point("checkout.orders", &[("region", "eu"), ("job", "checkout")])
                .and_then(|p| p.number())
                .map(|n| n.as_f64()),
            Some(5.0)
        );
    }

    #[test]
    fn the_cloudwatch_default_keeps_the_host_summary_and_every_application_metric() {
        let s = cloudwatch_default_for(&[]);
        for kept in [
            "system.cpu.utilization",
            "system.memory.utilization",
            "system.filesystem.utilization",
            "system.disk.io_time",
            "system.network.io",
            "checkout.orders",
            "procstat.cpu.time",
            "probe.duration",
        ] {
            assert!(s.selects(kept), "{kept}");
        }
        for left in [
            "system.cpu.time",
            "system.network.packet.count",
            "system.paging.usage",
            "process.cpu.time",
            "sonde.statsd.lines",
        ] {
            assert!(!s.selects(left), "{left}");
        }
    }
}
