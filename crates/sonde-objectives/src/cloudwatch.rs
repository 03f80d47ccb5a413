//! CloudWatch alarms from the objectives: a CloudFormation template over the metrics sonde's
//! CloudWatch exporter sends (`sonde-cloudwatch`: the OpenTelemetry metric name, its labels as
//! dimensions plus `service.name`, histograms as value/count pairs in the family's unit, so
//! percentiles and percentile ranks work).
//!
//! - A **threshold objective** becomes one alarm on the percentile statistic (`p95`) of its
//!   histogram over a period of its window, above the threshold (in seconds, the unit sonde
//!   sends durations in) for as many periods as its `for` needs.
//! - A **ratio objective** becomes one alarm per window of its burn-rate pairs on the error
//!   ratio computed with metric math (bad / total, 1 - good / total, or for latency as a ratio
//!   `1 - PR(:le) / 100` with the histogram's percentile rank), above `factor × budget` (the
//!   error ratio the Prometheus alert's burn rate stands for), silent below the objective's
//!   traffic floor; and a composite alarm ANDing each pair, ORing the pairs, named after the
//!   Prometheus alert. The page pairs are used (1h/5m, 6h/30m); when none can happen (a large
//!   budget) the ticket pairs whose windows fit CloudWatch's one-day period.
//!
//! CloudWatch has no label matchers, so a selector becomes dimensions: `label="value"` is a
//! dimension, `label=~"a|b"` (literal alternatives) sums one metric per value, and
//! `error.type!=""` on the HTTP server duration sums the `error.type` values sonde's HTTP
//! instrumentation sets (`500`, `502`, `503`, `504`, `_OTHER`). Other matchers (`!=`, `!~`,
//! other regular expressions) cannot be expressed: on the total they are left out (the alarm
//! covers more series, and its description says so); on the good or bad events they would
//! change the meaning, so the objective gets no alarm and the template says why. Each set of
//! dimensions is one the exporter must send as a rollup: the template's header lists them.

use std::fmt::Write as _;

use crate::model::{
    BurnPair, Decimal, Events, Objectives, Ratio, SourceKind, Subset, Threshold, Window,
};
use crate::selector::{Matcher, Op, Selector};

/// Where the template is written, relative to the output directory.
pub const CLOUDWATCH_FILE: &str = "cloudwatch/sonde-objectives.yaml";

/// The `error.type` values sonde's HTTP server instrumentation sets on failed requests (5xx
/// answers and requests that got no answer).
pub const HTTP_SERVER_ERROR_TYPES: &[&str] = &["500", "502", "503", "504", "_OTHER"];

/// The longest period a CloudWatch alarm evaluates.
const MAX_PERIOD: u64 = 86_400;

/// A YAML node, kept in order.
#[derive(Debug, Clone)]
enum Y {
    Map(Vec<(String, Y)>),
    List(Vec<Y>),
    Str(String),
    Num(String),
    Bool(bool),
}

fn s(v: &str) -> Y {
    Y::Str(v.to_string())
}

fn map(entries: Vec<(&str, Y)>) -> Y {
    Y::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn reference(name: &str) -> Y {
    map(vec![("Ref", s(name))])
}

fn sub(text: &str) -> Y {
    map(vec![("Fn::Sub", s(text))])
}

/// A YAML scalar: single-quoted (only `'` doubled), or JSON-quoted with control characters.
fn scalar(v: &str) -> String {
    if v.chars().any(char::is_control) {
        serde_json::to_string(v).unwrap_or_else(|_| format!("\"{}\"", v.escape_default()))
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

fn inline(y: &Y) -> Option<String> {
    match y {
        Y::Str(v) => Some(scalar(v)),
        Y::Num(n) => Some(n.clone()),
        Y::Bool(b) => Some(b.to_string()),
        Y::Map(m) if m.is_empty() => Some("{}".into()),
        Y::List(l) if l.is_empty() => Some("[]".into()),
        _ => None,
    }
}

fn emit(y: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match y {
        Y::Map(entries) => {
            for (k, v) in entries {
                match inline(v) {
                    Some(text) => {
                        let _ = writeln!(out, "{pad}{k}: {text}");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{k}:");
                        // Lists sit at their key's indentation, maps one level in.
                        let next = if matches!(v, Y::List(_)) {
                            indent
                        } else {
                            indent + 2
                        };
                        emit(v, next, out);
                    }
                }
            }
        }
        Y::List(items) => {
            for item in items {
                match inline(item) {
                    Some(text) => {
                        let _ = writeln!(out, "{pad}- {text}");
                    }
                    None => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        // The first line's indentation becomes the dash.
                        let body = inner.get(indent + 2..).unwrap_or("");
                        let _ = write!(out, "{pad}- {body}");
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other).unwrap_or_default());
        }
    }
}

/// `api-latency-p95` → `ApiLatencyP95` (a CloudFormation logical id part).
fn camel(name: &str) -> String {
    crate::parse::camel_words(name.split(|c: char| !c.is_ascii_alphanumeric()))
}

/// As the exporter renders names and dimension values: ASCII only, bounded.
fn cw(v: &str, max: usize) -> String {
    sonde_core::name::cloudwatch_text(v, max)
}

/// `a × b`, exactly.
fn product(a: Decimal, b: Decimal) -> Decimal {
    Decimal {
        mantissa: a.mantissa * b.mantissa,
        scale: a.scale + b.scale,
    }
}

/// A number as written in the template (shortest exact form).
fn num(d: Decimal) -> Y {
    Y::Num(d.to_string())
}

/// Dimension sets for a selector: every set the selector's expressible matchers allow, and the
/// matchers that could not be expressed.
struct Dims {
    sets: Vec<Vec<(String, String)>>,
    dropped: Vec<String>,
}

/// The literal alternatives of a regular expression (`hit|miss`), if it is only that.
fn alternatives(re: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = re.split('|').map(str::to_string).collect();
    parts
        .iter()
        .all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | ':' | ' '))
        })
        .then_some(parts)
}

fn matcher_text(m: &Matcher) -> String {
    format!(
        "{}{}{}",
        m.label,
        m.op.as_str(),
        crate::selector::promql_string(&m.value)
    )
}

fn dims(metric: &str, selector: &Selector) -> Dims {
    let mut sets: Vec<Vec<(String, String)>> = vec![Vec::new()];
    let mut dropped = Vec::new();
    for m in &selector.matchers {
        let values: Option<Vec<String>> = match m.op {
            Op::Eq if !m.value.is_empty() => Some(vec![m.value.clone()]),
            Op::Re => alternatives(&m.value),
            Op::Ne
                if m.value.is_empty()
                    && m.label == crate::load::ERROR_TYPE
                    && metric == crate::load::HTTP_SERVER_DURATION =>
            {
                Some(
                    HTTP_SERVER_ERROR_TYPES
                        .iter()
                        .map(|v| v.to_string())
                        .collect(),
                )
            }
            _ => None,
        };
        let Some(values) = values else {
            dropped.push(matcher_text(m));
            continue;
        };
        let mut next = Vec::new();
        for set in &sets {
            match set.iter().find(|(k, _)| k == &m.label) {
                // Already fixed by another matcher: keep the set if this one agrees.
                Some((_, v)) => {
                    if values.contains(v) {
                        next.push(set.clone());
                    }
                }
                None => {
                    for v in &values {
                        let mut s = set.clone();
                        s.push((m.label.clone(), v.clone()));
                        next.push(s);
                    }
                }
            }
        }
        sets = next;
    }
    Dims { sets, dropped }
}

fn dimensions(set: &[(String, String)]) -> Y {
    let mut all: Vec<(String, Y)> = set
        .iter()
        .map(|(k, v)| (cw(k, 255), s(&cw(v, 1024))))
        .collect();
    all.push(("service.name".to_string(), reference("ServiceName")));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Y::List(
        all.into_iter()
            .map(|(k, v)| map(vec![("Name", s(&k)), ("Value", v)]))
            .collect(),
    )
}

fn rollup_of(set: &[(String, String)]) -> Vec<String> {
    let mut r: Vec<String> = set.iter().map(|(k, _)| k.clone()).collect();
    r.sort();
    r
}

fn actions(enabled: bool) -> Vec<(&'static str, Y)> {
    let mut v = vec![("ActionsEnabled", Y::Bool(enabled))];
    if enabled {
        let topic = || {
            map(vec![(
                "Fn::If",
                Y::List(vec![
                    s("HasAlarmTopic"),
                    Y::List(vec![reference("AlarmTopicArn")]),
                    reference("AWS::NoValue"),
                ]),
            )])
        };
        v.push(("AlarmActions", topic()));
        v.push(("OKActions", topic()));
    }
    v
}

/// What was generated besides the resources.
#[derive(Default)]
struct Notes {
    rollups: Vec<Vec<String>>,
    skipped: Vec<String>,
}

impl Notes {
    /// Adds the resources made for the objective `name` to `resources`, or notes why it has
    /// none.
    fn add(
        &mut self,
        name: &str,
        made: Result<impl IntoIterator<Item = (String, Y)>, String>,
        resources: &mut Vec<(String, Y)>,
    ) {
        match made {
            Ok(r) => resources.extend(r),
            Err(why) => self.skipped.push(format!("{name}: no alarm: {why}")),
        }
    }

    fn rollup(&mut self, set: &[(String, String)]) {
        let r = rollup_of(set);
        if !self.rollups.contains(&r) {
            self.rollups.push(r);
        }
    }
}

fn dropped_note(dropped: &[String]) -> String {
    if dropped.is_empty() {
        String::new()
    } else {
        format!(
            " CloudWatch cannot select {} (no such dimension filter), so the alarm covers those series too.",
            dropped.join(", ")
        )
    }
}

fn threshold_alarm(t: &Threshold, notes: &mut Notes) -> Result<(String, Y), String> {
    let d = dims(&t.metric, &t.selector);
    let mut dropped = d.dropped;
    // A percentile cannot be summed over several metrics: several alternatives widen it.
    let set = match d.sets.as_slice() {
        [one] => one.clone(),
        [] => return Err("its selector matches no series".into()),
        _ => {
            let labels: Vec<String> = t
                .selector
                .matchers
                .iter()
                .filter(|m| m.op == Op::Re)
                .map(matcher_text)
                .collect();
            dropped.extend(labels);
            t.selector
                .matchers
                .iter()
                .filter(|m| m.op == Op::Eq && !m.value.is_empty())
                .map(|m| (m.label.clone(), m.value.clone()))
                .collect()
        }
    };
    notes.rollup(&set);
    let period = t.window.seconds.clamp(60, MAX_PERIOD) / 60 * 60;
    let periods = t
        .for_
        .seconds
        .div_ceil(period)
        .clamp(1, MAX_PERIOD / period);
    let description = format!(
        "{}: {} latency above {} (objective {}: {}{} {} < {} over {}; {} over {} s, {} period(s)).{}{} Runbook: {}",
        t.common.description,
        t.percentile.text,
        t.threshold.text,
        t.common.name,
        t.metric,
        selector_text(&t.selector),
        t.percentile.text,
        t.threshold.text,
        t.window.text,
        t.percentile.text,
        period,
        periods,
        dropped_note(&dropped),
        whole_service(&t.common.by),
        t.runbook_url
    );
    let mut props = vec![
        ("AlarmName", sub(&format!("${{ServiceName}}-{}", t.alert))),
        ("AlarmDescription", s(&description)),
    ];
    props.extend(actions(true));
    props.extend([
        ("ComparisonOperator", s("GreaterThanThreshold")),
        ("Threshold", num(t.threshold.seconds)),
        ("EvaluationPeriods", Y::Num(periods.to_string())),
        ("DatapointsToAlarm", Y::Num(periods.to_string())),
        ("TreatMissingData", s("notBreaching")),
        ("Namespace", reference("Namespace")),
        ("MetricName", s(&cw(&t.metric, 255))),
        ("Dimensions", dimensions(&set)),
        ("Period", Y::Num(period.to_string())),
        ("ExtendedStatistic", s(&t.percentile.text)),
    ]);
    Ok((
        format!("{}Alarm", t.alert),
        map(vec![
            ("Type", s("AWS::CloudWatch::Alarm")),
            ("Properties", map(props)),
        ]),
    ))
}

/// A note when Prometheus judges the objective per more labels than the job.
fn whole_service(by: &[String]) -> String {
    if by.len() > 1 {
        format!(
            " Prometheus judges it per {}; this alarm judges the whole service.",
            by.join(", ")
        )
    } else {
        String::new()
    }
}

fn selector_text(sel: &Selector) -> String {
    if sel.matchers.is_empty() {
        String::new()
    } else {
        format!(
            "{{{}}}",
            sel.matchers
                .iter()
                .map(matcher_text)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn metric_stat(id: &str, e: &Events, set: &[(String, String)], period: u64, stat: &str) -> Y {
    map(vec![
        ("Id", s(id)),
        ("ReturnData", Y::Bool(false)),
        (
            "MetricStat",
            map(vec![
                (
                    "Metric",
                    map(vec![
                        ("Namespace", reference("Namespace")),
                        ("MetricName", s(&cw(&e.metric, 255))),
                        ("Dimensions", dimensions(set)),
                    ]),
                ),
                ("Period", Y::Num(period.to_string())),
                ("Stat", s(stat)),
            ]),
        ),
    ])
}

fn count_stat(e: &Events) -> &'static str {
    match e.kind {
        SourceKind::Counter => "Sum",
        SourceKind::Histogram { .. } => "SampleCount",
    }
}

/// The matchers of `narrow` that `base` lacks.
fn extra(base: &Selector, narrow: &Selector) -> Selector {
    Selector {
        matchers: narrow
            .matchers
            .iter()
            .filter(|m| !base.matchers.contains(m))
            .cloned()
            .collect(),
    }
}

/// How a ratio objective's error ratio is computed in metric math.
struct RatioMath {
    total: Vec<Vec<(String, String)>>,
    subset: Vec<Vec<(String, String)>>,
    /// `Some(le)`: the good events are the percentile rank `PR(:le)` of the total's metric.
    rank: Option<String>,
    good: bool,
    dropped: Vec<String>,
}

fn ratio_math(r: &Ratio) -> Result<RatioMath, String> {
    let (e, good) = match &r.subset {
        Subset::Good(e) => (e, true),
        Subset::Bad(e) => (e, false),
    };
    let which = if good { "good" } else { "bad" };
    let total = dims(&r.total.metric, &r.total.selector);
    let narrow = extra(&r.total.selector, &e.selector);
    let own = dims(&e.metric, &narrow);
    if !own.dropped.is_empty() {
        return Err(format!(
            "its {which} events are selected by {}, which CloudWatch dimensions cannot express (only label=\"value\", literal alternatives label=~\"a|b\" and error.type!=\"\" on {})",
            own.dropped.join(", "),
            crate::load::HTTP_SERVER_DURATION
        ));
    }
    if total.sets.is_empty() {
        return Err("its total selects no series".into());
    }
    let rank = match (&e.le, &e.kind) {
        (Some(le), SourceKind::Histogram { .. }) => {
            if e.metric != r.total.metric || !narrow.matchers.is_empty() || total.sets.len() != 1 {
                return Err(format!(
                    "its {which} events are a histogram bucket of a narrower selection than the total's, which a percentile rank cannot express"
                ));
            }
            Some(le.seconds.to_string())
        }
        _ => None,
    };
    // The subset: the total's (shared) dimension sets, narrowed by its own matchers.
    let shared = Selector {
        matchers: e
            .selector
            .matchers
            .iter()
            .filter(|m| !total.dropped.contains(&matcher_text(m)))
            .cloned()
            .collect(),
    };
    let subset = dims(&e.metric, &shared);
    Ok(RatioMath {
        total: total.sets,
        subset: subset.sets,
        rank,
        good,
        dropped: total.dropped,
    })
}

/// The pairs CloudWatch alarms on, and whether they are the page pairs.
fn cloudwatch_pairs(r: &Ratio) -> (Vec<BurnPair>, bool, Vec<BurnPair>) {
    let page = r.page_pairs();
    if !page.is_empty() {
        return (page, true, Vec::new());
    }
    let (fit, left): (Vec<BurnPair>, Vec<BurnPair>) = r
        .ticket_pairs()
        .into_iter()
        .partition(|p| p.long.seconds <= MAX_PERIOD);
    (fit, false, left)
}

fn ratio_alarms(r: &Ratio, notes: &mut Notes) -> Result<Vec<(String, Y)>, String> {
    let math = ratio_math(r)?;
    let (pairs, page, left) = cloudwatch_pairs(r);
    if pairs.is_empty() {
        return Err(format!(
            "no burn-rate pair of its {} target fits CloudWatch's one-day alarm period",
            r.target.text
        ));
    }
    for p in &left {
        notes.skipped.push(format!(
            "{}: the {}/{} burn-rate pair is left out (CloudWatch alarm periods are at most one day)",
            r.common.name, p.long.text, p.short.text
        ));
    }
    for set in math.total.iter().chain(&math.subset) {
        notes.rollup(set);
    }
    let base = camel(&r.common.name);
    let (alert, runbook) = if page {
        (&r.alert_page, &r.runbook_page)
    } else {
        (&r.alert_ticket, &r.runbook_ticket)
    };
    let by_note = whole_service(&r.common.by);
    let mut out = Vec::new();
    let mut windows: Vec<(Window, Decimal, String)> = Vec::new();
    for p in &pairs {
        let factor = Decimal::parse(&p.factor_text()).unwrap_or(Decimal {
            mantissa: 1,
            scale: 0,
        });
        for w in [&p.long, &p.short] {
            if !windows.iter().any(|(x, _, _)| x == w) {
                windows.push((w.clone(), factor, p.factor_text()));
            }
        }
    }
    for (w, factor, factor_text) in &windows {
        let period = w.seconds;
        let mut metrics = Vec::new();
        let stat = count_stat(&r.total);
        let total_ids: Vec<String> = (0..math.total.len()).map(|i| format!("t{i}")).collect();
        for (id, set) in total_ids.iter().zip(&math.total) {
            metrics.push(metric_stat(id, &r.total, set, period, stat));
        }
        let sum = |ids: &[String]| {
            ids.iter()
                .map(|i| format!("FILL({i}, 0)"))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let total_expr = if total_ids.len() == 1 {
            "t0".to_string()
        } else {
            format!("({})", sum(&total_ids))
        };
        let ratio = match &math.rank {
            Some(le) => {
                let m = metric_stat(
                    "good",
                    &r.total,
                    &math.total[0],
                    period,
                    &format!("PR(:{le})"),
                );
                metrics.push(m);
                "1 - FILL(good, 100) / 100".to_string()
            }
            None => {
                let e = match &r.subset {
                    Subset::Good(e) | Subset::Bad(e) => e,
                };
                let ids: Vec<String> = (0..math.subset.len()).map(|i| format!("e{i}")).collect();
                for (id, set) in ids.iter().zip(&math.subset) {
                    metrics.push(metric_stat(id, e, set, period, count_stat(e)));
                }
                let part = if ids.is_empty() {
                    "0".to_string()
                } else {
                    sum(&ids)
                };
                if math.good {
                    format!("1 - ({part}) / {total_expr}")
                } else {
                    format!("({part}) / {total_expr}")
                }
            }
        };
        let floor = r.common.min_traffic.per_second() * period as f64;
        let expression = if floor > 0.0 {
            format!(
                "IF({total_expr} >= {}, {ratio}, 0)",
                (floor * 1e6).round() / 1e6
            )
        } else {
            ratio
        };
        metrics.push(map(vec![
            ("Id", s("ratio")),
            ("Label", s(&format!("{} error ratio", r.common.name))),
            ("ReturnData", Y::Bool(true)),
            ("Expression", s(&expression)),
        ]));
        let threshold = product(*factor, r.target.budget);
        let description = format!(
            "{}: error ratio over {} above {threshold} (burn rate {factor_text} of the {} budget {}; objective {}: {} over {}), part of {alert}.{}{} Runbook: {runbook}",
            r.common.description,
            w.text,
            r.window.text,
            r.target.budget,
            r.common.name,
            r.target.text,
            r.window.text,
            dropped_note(&math.dropped),
            by_note,
        );
        let mut props = vec![
            (
                "AlarmName",
                sub(&format!("${{ServiceName}}-{base}Burn{}", w.text)),
            ),
            ("AlarmDescription", s(&description)),
        ];
        props.extend(actions(false));
        props.extend([
            ("ComparisonOperator", s("GreaterThanThreshold")),
            ("Threshold", num(threshold)),
            ("EvaluationPeriods", Y::Num("1".into())),
            ("DatapointsToAlarm", Y::Num("1".into())),
            ("TreatMissingData", s("notBreaching")),
            ("Metrics", Y::List(metrics)),
        ]);
        out.push((
            format!("{base}Burn{}Alarm", w.text),
            map(vec![
                ("Type", s("AWS::CloudWatch::Alarm")),
                ("Properties", map(props)),
            ]),
        ));
    }
    let rule = pairs
        .iter()
        .map(|p| {
            format!(
                "(ALARM(\"${{{base}Burn{}Alarm}}\") AND ALARM(\"${{{base}Burn{}Alarm}}\"))",
                p.long.text, p.short.text
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let pairs_text = pairs
        .iter()
        .map(|p| {
            format!(
                "{} and {} error ratios above {} (burn rate {})",
                p.long.text,
                p.short.text,
                product(
                    Decimal::parse(&p.factor_text()).unwrap_or(Decimal {
                        mantissa: 1,
                        scale: 0
                    }),
                    r.target.budget
                ),
                p.factor_text()
            )
        })
        .collect::<Vec<_>>()
        .join(", or ");
    let mut props = vec![
        ("AlarmName", sub(&format!("${{ServiceName}}-{alert}"))),
        (
            "AlarmDescription",
            s(&format!(
                "{}: error budget burning (objective {}, {} over {}): {pairs_text}. Runbook: {runbook}",
                r.common.description, r.common.name, r.target.text, r.window.text
            )),
        ),
    ];
    props.extend(actions(true));
    props.push(("AlarmRule", sub(&rule)));
    out.push((
        format!("{alert}Alarm"),
        map(vec![
            ("Type", s("AWS::CloudWatch::CompositeAlarm")),
            ("Properties", map(props)),
        ]),
    ));
    Ok(out)
}

fn parameters() -> Y {
    map(vec![
        (
            "Namespace",
            string_parameter(
                "Sonde/Service",
                None,
                "The namespace given to sonde's CloudWatchBuilder::new.",
            ),
        ),
        (
            "ServiceName",
            string_parameter(
                "example",
                Some("[A-Za-z0-9._-]+"),
                "The service.name resource attribute (OTEL_SERVICE_NAME); the exporter adds it as a dimension to every metric.",
            ),
        ),
        (
            "AlarmTopicArn",
            string_parameter(
                "",
                None,
                "SNS topic notified when an alarm changes state (empty: none).",
            ),
        ),
    ])
}

/// A `String` parameter of the template: its default, the pattern it must match if any, and
/// what it is.
fn string_parameter(default: &str, allowed: Option<&str>, description: &str) -> Y {
    let mut entries = vec![("Type", s("String")), ("Default", s(default))];
    entries.extend(allowed.map(|p| ("AllowedPattern", s(p))));
    entries.push(("Description", s(description)));
    map(entries)
}

/// The CloudFormation template, and the objectives (or parts) without an alarm and why.
pub fn template(o: &Objectives) -> (String, Vec<String>) {
    let mut notes = Notes::default();
    let mut resources: Vec<(String, Y)> = Vec::new();
    for t in &o.thresholds {
        let made = threshold_alarm(t, &mut notes).map(Some);
        notes.add(&t.common.name, made, &mut resources);
    }
    for r in &o.ratios {
        let made = ratio_alarms(r, &mut notes);
        notes.add(&r.common.name, made, &mut resources);
    }
    if resources.is_empty() {
        // A template needs a resource.
        resources.push((
            "NoObjectiveHandle".into(),
            map(vec![(
                "Type",
                s("AWS::CloudFormation::WaitConditionHandle"),
            )]),
        ));
    }
    let mut out = format!(
        "# CloudWatch alarms of the service level objectives, generated by sonde-objectives from {}.\n# Do not edit: {}.\n#\n# The metrics are those sonde's CloudWatch exporter sends; CloudWatch identifies a metric by its\n# name and its exact set of dimensions, so the exporter must send these rollups:\n#\n#   sonde::cloudwatch::CloudWatchBuilder::new(\"Sonde/Service\")\n",
        o.origin,
        crate::generate::regenerate_hint(o)
    );
    let mut rollups = notes.rollups.clone();
    rollups.sort();
    for r in &rollups {
        if r.is_empty() {
            out.push_str(
                "#       .rollup(Vec::<String>::new())  // [service.name]: the whole service\n",
            );
        } else {
            let _ = writeln!(
                out,
                "#       .rollup([{}])",
                r.iter()
                    .map(|l| format!("\"{l}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if !notes.skipped.is_empty() {
        out.push_str("#\n# Left out:\n");
        for sk in &notes.skipped {
            let _ = writeln!(out, "#   {sk}");
        }
    }
    let doc = map(vec![
        ("AWSTemplateFormatVersion", s("2010-09-09")),
        (
            "Description",
            s(&format!(
                "CloudWatch alarms of the service level objectives in {}, over the metrics sonde's CloudWatch exporter sends (generated by sonde-objectives).",
                o.origin
            )),
        ),
        ("Parameters", parameters()),
        (
            "Conditions",
            map(vec![(
                "HasAlarmTopic",
                map(vec![(
                    "Fn::Not",
                    Y::List(vec![map(vec![(
                        "Fn::Equals",
                        Y::List(vec![reference("AlarmTopicArn"), s("")]),
                    )])]),
                )]),
            )]),
        ),
        ("Resources", Y::Map(resources)),
    ]);
    emit(&doc, 0, &mut out);
    (out, notes.skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_shapes() {
        let y = map(vec![
            ("A", s("x'y")),
            (
                "L",
                Y::List(vec![
                    map(vec![("Id", s("t0")), ("N", Y::Num("1".into()))]),
                    s("plain"),
                ]),
            ),
            ("M", map(vec![("K", Y::Bool(true))])),
        ]);
        let mut out = String::new();
        emit(&y, 0, &mut out);
        assert_eq!(
            out,
            "A: 'x''y'\nL:\n- Id: 't0'\n  N: 1\n- 'plain'\nM:\n  K: true\n"
        );
    }

    #[test]
    fn selectors_become_dimension_sets() {
        let sel =
            Selector::parse(r#"cache.name="users", cache.result=~"hit|miss", cache.result="hit""#)
                .unwrap_or_else(|e| panic!("{e:?}"));
        let d = dims("cache.requests", &sel);
        assert_eq!(
            d.sets,
            vec![vec![
                ("cache.name".to_string(), "users".to_string()),
                ("cache.result".to_string(), "hit".to_string())
            ]]
        );
        let sel = Selector::parse(r#"http.route!="/health", error.type!="""#)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let d = dims("http.server.request.duration", &sel);
        assert_eq!(d.sets.len(), HTTP_SERVER_ERROR_TYPES.len());
        assert_eq!(d.dropped, vec!["http.route!=\"/health\"".to_string()]);
        assert_eq!(camel("api-latency-p95"), "ApiLatencyP95");
    }
}
