//! From objectives to Prometheus recording rules, alerts and their promtool unit tests.

use std::fmt::Write as _;

use crate::Error;
use crate::model::{Events, Objectives, Ratio, Subset, Threshold, prometheus_label};
use crate::selector::Selector;

/// The recording rules file (the output directory mirrors a repository: rules under `alerts/`).
pub const RECORDING_FILE: &str = "alerts/objectives.recording.yml";
/// The alerting rules file.
pub const ALERTS_FILE: &str = "alerts/objectives.alerts.yml";
/// The promtool unit tests (their `rule_files` are relative to them: `../objectives.*.yml`).
pub const TESTS_FILE: &str = "alerts/tests/objectives.test.yml";

/// How long a page alert's condition must hold.
pub const PAGE_FOR: &str = "2m";
/// How long a ticket alert's condition must hold.
pub const TICKET_FOR: &str = "15m";

/// Generated files: (path relative to the output directory, content).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The files, in the order written.
    pub files: Vec<(String, String)>,
}

impl Generated {
    /// The content of the file at `path`, if generated.
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_str())
    }
}

/// A YAML scalar: a JSON string is a valid double-quoted YAML scalar.
/// Single-quoted (only `'` is doubled) unless the text has control characters.
fn q(s: &str) -> String {
    if s.chars().any(char::is_control) {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn f64_text(v: f64) -> String {
    format!("{v}")
}

/// A percentage for test names: at most 4 decimals, no trailing zeros.
fn pct(fraction: f64) -> String {
    let s = format!("{:.4}", fraction * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Go's `fmt.Sprintf("%.4g", v)`, which Prometheus's `humanize*` template functions use.
pub fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let e = format!("{v:.3e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..4).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        trim(&format!("{:.*}", (3 - exp) as usize, v))
    }
}

/// Prometheus's `humanizeDuration` (seconds → `1.155s`, `385ms`, `2m 5s`).
pub fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g4(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", go_g4(v));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g4(v))
}

/// A part of an annotation: text, a label's value, or the alert's value.
enum Part {
    Text(String),
    Label(String),
    Value(&'static str),
}

/// The template and what it renders to for `labels` and `value`.
fn render(parts: &[Part], labels: &[(String, String)], value: f64) -> (String, String) {
    let mut template = String::new();
    let mut expected = String::new();
    for p in parts {
        match p {
            Part::Text(t) => {
                template.push_str(t);
                expected.push_str(t);
            }
            Part::Label(l) => {
                let _ = write!(template, "{{{{ $labels.{l} }}}}");
                expected.push_str(
                    labels
                        .iter()
                        .find(|(k, _)| k == l)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or(""),
                );
            }
            Part::Value(f) => match *f {
                "humanizeDuration" => {
                    template.push_str("{{ $value | humanizeDuration }}");
                    expected.push_str(&humanize_duration(value));
                }
                _ => {
                    template.push_str("{{ $value | printf \"%.1f\" }}");
                    let _ = write!(expected, "{value:.1}");
                }
            },
        }
    }
    (template, expected)
}

/// `{{ $labels.job }}, http.route {{ $labels.http_route }}` for an objective's `by` labels.
fn who(by: &[String]) -> Vec<Part> {
    let mut parts = Vec::new();
    for (i, l) in by.iter().enumerate() {
        if i == 0 {
            parts.push(Part::Label(prometheus_label(l)));
        } else {
            parts.push(Part::Text(format!(", {l} ")));
            parts.push(Part::Label(prometheus_label(l)));
        }
    }
    parts
}

fn selector_text(s: &Selector) -> String {
    if s.matchers.is_empty() {
        String::new()
    } else {
        let m: Vec<String> = s
            .matchers
            .iter()
            .map(|m| {
                format!(
                    "{}{}{}",
                    m.label,
                    m.op.as_str(),
                    crate::selector::promql_string(&m.value)
                )
            })
            .collect();
        format!("{{{}}}", m.join(", "))
    }
}

fn vector(name: &str, s: &Selector) -> String {
    let m = s.promql_matchers();
    if m.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", m.join(", "))
    }
}

fn objective_vector(record: &str, objective: &str) -> String {
    format!(
        "{record}{{objective={}}}",
        crate::selector::promql_string(objective)
    )
}

struct Names {
    quantile: String,
    rate: String,
}

fn threshold_names(t: &Threshold) -> Names {
    let family = t.family();
    Names {
        quantile: format!(
            "objective:{family}:{}_rate{}",
            t.percentile.tag(),
            t.window.text
        ),
        rate: format!("objective:{family}:rate{}", t.window.text),
    }
}

const SLI_ERROR: &str = "objective:sli_error:ratio_rate";
const SLI_EVENTS: &str = "objective:sli_events:rate1h";

fn record(out: &mut String, name: &str, expr: &str, objective: &str) {
    let _ = writeln!(out, "      - record: {name}");
    let _ = writeln!(out, "        expr: {}", q(expr));
    let _ = writeln!(out, "        labels:");
    let _ = writeln!(out, "          objective: {}", q(objective));
}

fn events_rate(e: &Events, by: &str, w: &str) -> String {
    format!("sum by ({by}) (rate({}[{w}]))", e.promql())
}

/// What the generated files' headers say after `Do not edit:` (the file as given, so a
/// relative path in a repository reads the same on every machine).
pub fn regenerate_hint(o: &Objectives) -> String {
    format!(
        "change {} and run `sonde-objectives generate {} --into .`\n# from the directory holding alerts/, dashboards/ and cloudwatch/ (or `--out DIR`)",
        o.origin, o.origin
    )
}

fn header(o: &Objectives, what: &str) -> String {
    format!(
        "# {what}, generated by sonde-objectives from {}.\n# Do not edit: {}.\n",
        o.origin,
        regenerate_hint(o)
    )
}

/// Starts the rule group `name`: its quoted name and `rules:`.
fn rule_group(out: &mut String, name: &str) {
    let _ = writeln!(out, "  - name: {}", q(name));
    let _ = writeln!(out, "    rules:");
}

fn recording(o: &Objectives) -> String {
    let mut out = header(o, "Recording rules of the service level objectives");
    out.push_str("groups:\n");
    for t in &o.thresholds {
        let n = threshold_names(t);
        let by = t.common.by_promql();
        let family = t.family();
        rule_group(&mut out, &format!("objective-{}", t.common.name));
        let _ = writeln!(
            out,
            "      # {}: {}{} {} < {} over {}.",
            t.common.name,
            t.metric,
            selector_text(&t.selector),
            t.percentile.text,
            t.threshold.text,
            t.window.text
        );
        record(
            &mut out,
            &n.quantile,
            &format!(
                "histogram_quantile({}, sum by ({by}, le) (rate({}[{}])))",
                t.percentile.quantile,
                vector(&format!("{family}_bucket"), &t.selector),
                t.window.text
            ),
            &t.common.name,
        );
        record(
            &mut out,
            &n.rate,
            &format!(
                "sum by ({by}) (rate({}[{}]))",
                vector(&format!("{family}_count"), &t.selector),
                t.window.text
            ),
            &t.common.name,
        );
        out.push('\n');
    }
    for r in &o.ratios {
        let by = r.common.by_promql();
        rule_group(&mut out, &format!("objective-{}", r.common.name));
        let _ = writeln!(
            out,
            "      # {}: {} of {} over {} (error budget {}); the error ratio over each burn-rate window.",
            r.common.name, r.target.text, r.common.description, r.window.text, r.target.budget
        );
        for w in r.sli_windows() {
            let total = events_rate(&r.total, &by, &w.text);
            let expr = match &r.subset {
                Subset::Bad(b) => format!(
                    "({} or 0 * {total}) / {total}",
                    events_rate(b, &by, &w.text)
                ),
                Subset::Good(g) => format!(
                    "1 - ({} or 0 * {total}) / {total}",
                    events_rate(g, &by, &w.text)
                ),
            };
            record(
                &mut out,
                &format!("{SLI_ERROR}{}", w.text),
                &expr,
                &r.common.name,
            );
        }
        record(
            &mut out,
            SLI_EVENTS,
            &events_rate(&r.total, &by, "1h"),
            &r.common.name,
        );
        out.push('\n');
    }
    out
}

fn threshold_alert_parts(t: &Threshold) -> (String, Vec<Part>) {
    let summary = format!(
        "{}: {} latency above {} (objective {})",
        t.common.description, t.percentile.text, t.threshold.text, t.common.name
    );
    let mut parts = who(&t.common.by);
    parts.push(Part::Text(format!(
        ": {} of {} is ",
        t.percentile.text, t.metric
    )));
    parts.push(Part::Value("humanizeDuration"));
    parts.push(Part::Text(format!(
        " over the last {}; the objective `{}` is {} < {}.",
        t.window.text, t.common.name, t.percentile.text, t.threshold.text
    )));
    (summary, parts)
}

fn ratio_alert_parts(r: &Ratio, fast: bool) -> (String, Vec<Part>) {
    let pairs = if fast {
        r.page_pairs()
    } else {
        r.ticket_pairs()
    };
    let summary = format!(
        "{}: error budget burning {}(objective {}, {} over {})",
        r.common.description,
        if fast { "fast " } else { "" },
        r.common.name,
        r.target.text,
        r.window.text
    );
    let mut parts = who(&r.common.by);
    parts.push(Part::Text(format!(
        " is spending the {} error budget of `{}` ({} of {}) ",
        r.window.text, r.common.name, r.target.text, r.common.description
    )));
    parts.push(Part::Value("printf"));
    parts.push(Part::Text(format!(
        " times faster than sustainable (burn rate over {}).",
        crate::model::BurnPair::describe(&pairs)
    )));
    (summary, parts)
}

/// One alerting rule, as written.
struct AlertRule<'a> {
    name: &'a str,
    expr: &'a str,
    for_: &'a str,
    severity: &'a str,
    summary: &'a str,
    description: &'a str,
    runbook: &'a str,
}

fn alert(out: &mut String, rule: &AlertRule<'_>) {
    let AlertRule {
        name,
        expr,
        for_,
        severity,
        summary,
        description,
        runbook,
    } = *rule;
    let _ = writeln!(out, "      - alert: {name}");
    let _ = writeln!(out, "        expr: |");
    for line in expr.lines() {
        let _ = writeln!(out, "          {line}");
    }
    let _ = writeln!(out, "        for: {for_}");
    let _ = writeln!(out, "        labels:");
    let _ = writeln!(out, "          severity: {severity}");
    let _ = writeln!(out, "        annotations:");
    let _ = writeln!(out, "          summary: {}", q(summary));
    let _ = writeln!(out, "          description: {}", q(description));
    let _ = writeln!(out, "          runbook_url: {}", q(runbook));
}

fn guard(by: &str, record: &str, objective: &str, floor: &crate::model::MinTraffic) -> String {
    if floor.events.is_zero() {
        String::new()
    } else {
        format!(
            "\nand on ({by})\n  {} >= {}",
            objective_vector(record, objective),
            floor.promql()
        )
    }
}

fn ratio_expr(r: &Ratio, fast: bool) -> Option<String> {
    let pairs = if fast {
        r.page_pairs()
    } else {
        r.ticket_pairs()
    };
    if pairs.is_empty() {
        return None;
    }
    let name = &r.common.name;
    let budget = r.target.budget.to_string();
    let terms: Vec<String> = pairs
        .iter()
        .map(|p| {
            let f = p.factor_text();
            format!(
                "    ({} / {budget} > {f} and {} / {budget} > {f})",
                objective_vector(&format!("{SLI_ERROR}{}", p.long.text), name),
                objective_vector(&format!("{SLI_ERROR}{}", p.short.text), name)
            )
        })
        .collect();
    Some(format!(
        "(\n{}\n){}",
        terms.join("\n  or\n"),
        guard(
            &r.common.by_promql(),
            SLI_EVENTS,
            name,
            &r.common.min_traffic
        )
    ))
}

fn alerts(o: &Objectives) -> String {
    let mut out = header(o, "Alerts on the service level objectives");
    out.push_str("groups:\n");
    for t in &o.thresholds {
        let n = threshold_names(t);
        rule_group(&mut out, &format!("objective-{}-alerts", t.common.name));
        let expr = format!(
            "{} > {}{}",
            objective_vector(&n.quantile, &t.common.name),
            t.threshold.seconds,
            guard(
                &t.common.by_promql(),
                &n.rate,
                &t.common.name,
                &t.common.min_traffic
            )
        );
        let (summary, parts) = threshold_alert_parts(t);
        let (description, _) = render(&parts, &[], 0.0);
        alert(
            &mut out,
            &AlertRule {
                name: &t.alert,
                expr: &expr,
                for_: &t.for_.text,
                severity: t.severity.as_str(),
                summary: &summary,
                description: &description,
                runbook: &t.runbook_url,
            },
        );
        out.push('\n');
    }
    for r in &o.ratios {
        rule_group(&mut out, &format!("objective-{}-alerts", r.common.name));
        let mut any = false;
        for (fast, name, for_, severity, runbook) in [
            (true, &r.alert_page, PAGE_FOR, "critical", &r.runbook_page),
            (
                false,
                &r.alert_ticket,
                TICKET_FOR,
                "warning",
                &r.runbook_ticket,
            ),
        ] {
            let Some(expr) = ratio_expr(r, fast) else {
                let _ = writeln!(
                    out,
                    "      # {name} left out: with a {} target no burn rate of its windows can happen.",
                    r.target.text
                );
                continue;
            };
            any = true;
            let (summary, parts) = ratio_alert_parts(r, fast);
            let (description, _) = render(&parts, &[], 0.0);
            alert(
                &mut out,
                &AlertRule {
                    name,
                    expr: &expr,
                    for_,
                    severity,
                    summary: &summary,
                    description: &description,
                    runbook,
                },
            );
        }
        if !any {
            out.push_str("      []\n");
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------- promtool unit tests

/// Label names and values.
type Labels = Vec<(String, String)>;

/// One input series: the PromQL series text and its values.
struct Series(String, String);

fn series_text(name: &str, labels: &[(String, String)]) -> String {
    let l: Vec<String> = labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            format!(
                "{}={}",
                prometheus_label(k),
                crate::selector::promql_string(v)
            )
        })
        .collect();
    format!("{name}{{{}}}", l.join(","))
}

fn values(per_minute: f64, minutes: u64) -> String {
    format!("0+{}x{minutes}", f64_text(per_minute))
}

/// The labels of a test series: job, instance, the selector's sample, then `by` labels it lacks.
fn with_target(job: &str, sample: &[(String, String)], by: &[String]) -> Vec<(String, String)> {
    let mut labels = vec![
        ("job".to_string(), job.to_string()),
        ("instance".to_string(), "a:1".to_string()),
    ];
    labels.extend(sample.iter().cloned());
    for b in by {
        if !labels.iter().any(|(k, _)| k == b) {
            labels.push((b.clone(), "a".to_string()));
        }
    }
    labels
}

fn expected_labels(
    severity: &str,
    objective: &str,
    by: &[String],
    labels: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out = vec![
        ("severity".to_string(), severity.to_string()),
        ("objective".to_string(), objective.to_string()),
    ];
    for b in by {
        if let Some((_, v)) = labels.iter().find(|(k, _)| k == b)
            && !v.is_empty()
        {
            out.push((prometheus_label(b), v.clone()));
        }
    }
    out
}

struct Expect {
    eval_minutes: u64,
    alert: String,
    alerts: Vec<(Labels, Labels)>,
}

fn write_test(out: &mut String, name: &str, _minutes: u64, series: &[Series], expects: &[Expect]) {
    let _ = writeln!(out, "  - name: {}", q(name));
    let _ = writeln!(out, "    interval: 1m");
    let _ = writeln!(out, "    input_series:");
    for Series(s, v) in series {
        let _ = writeln!(out, "      - series: {}", q(s));
        let _ = writeln!(out, "        values: {}", q(v));
    }
    let _ = writeln!(out, "    alert_rule_test:");
    for e in expects {
        let _ = writeln!(out, "      - eval_time: {}m", e.eval_minutes);
        let _ = writeln!(out, "        alertname: {}", e.alert);
        if e.alerts.is_empty() {
            let _ = writeln!(out, "        exp_alerts: []");
            continue;
        }
        let _ = writeln!(out, "        exp_alerts:");
        for (labels, annotations) in &e.alerts {
            let _ = writeln!(out, "          - exp_labels:");
            for (k, v) in labels {
                let _ = writeln!(out, "              {k}: {}", q(v));
            }
            let _ = writeln!(out, "            exp_annotations:");
            for (k, v) in annotations {
                let _ = writeln!(out, "              {k}: {}", q(v));
            }
        }
    }
    out.push('\n');
}

fn no_sample(objective: &str, what: &str) -> Error {
    Error::Generate(format!(
        "objective `{objective}`: no label values found that {what}, so no test series can be written; simplify its selector (plain values, or regular expressions with a literal alternative)"
    ))
}

fn threshold_tests(t: &Threshold, out: &mut String) -> Result<(), Error> {
    let name = &t.common.name;
    let sample = t
        .selector
        .sample()
        .ok_or_else(|| no_sample(name, "match its selector"))?;
    let family = t.family();
    let th = t.threshold.as_f64();
    let le_t = t.threshold.le();
    let le_4t = format!("{:?}", th * 4.0);
    let q = t.percentile.quantile.to_f64();
    let minutes_eval = (t.window.seconds + t.for_.seconds) / 60 + 5;
    let minutes = minutes_eval + 5;
    // All observations slower than the threshold (in (T, 4T]): the percentile is T + 3T·q.
    // Within: all at most T: the percentile is T·q.
    let hist = |labels: &[(String, String)], per_min: f64, fast: f64| -> Vec<Series> {
        let mut v = Vec::new();
        for (le, n) in [
            (le_t.as_str(), fast),
            (le_4t.as_str(), per_min),
            ("+Inf", per_min),
        ] {
            let mut l = labels.to_vec();
            l.push(("le".to_string(), le.to_string()));
            v.push(Series(
                series_text(&format!("{family}_bucket"), &l),
                values(n, minutes),
            ));
        }
        v.push(Series(
            series_text(&format!("{family}_count"), labels),
            values(per_min, minutes),
        ));
        v
    };
    let violating = with_target("violating", &sample, &t.common.by);
    let (_, parts) = threshold_alert_parts(t);
    let value = th + (4.0 * th - th) * q;
    let (_, description) = render(
        &parts,
        &violating
            .iter()
            .map(|(k, v)| (prometheus_label(k), v.clone()))
            .collect::<Vec<_>>(),
        value,
    );
    let (summary, _) = threshold_alert_parts(t);
    write_test(
        out,
        &format!(
            "{name}: {} above {} fires {}",
            t.percentile.text, t.threshold.text, t.alert
        ),
        minutes,
        &hist(&violating, 100.0, 0.0),
        &[
            // Pending, not firing, while `for` has not elapsed.
            Expect {
                eval_minutes: 1,
                alert: t.alert.clone(),
                alerts: vec![],
            },
            Expect {
                eval_minutes: minutes_eval,
                alert: t.alert.clone(),
                alerts: vec![(
                    expected_labels(t.severity.as_str(), name, &t.common.by, &violating),
                    vec![
                        ("summary".to_string(), summary),
                        ("description".to_string(), description),
                        ("runbook_url".to_string(), t.runbook_url.clone()),
                    ],
                )],
            },
        ],
    );
    let within = with_target("within", &sample, &t.common.by);
    let mut series = hist(&within, 100.0, 100.0);
    let mut title = format!(
        "{name}: {} within {} stays quiet",
        t.percentile.text, t.threshold.text
    );
    if !t.common.min_traffic.events.is_zero() {
        let idle = with_target("idle", &sample, &t.common.by);
        series.extend(hist(
            &idle,
            t.common.min_traffic.per_second() * 60.0 / 3.0,
            0.0,
        ));
        title.push_str(&format!(
            ", and so does a slow service under {}",
            t.common.min_traffic.text
        ));
    }
    write_test(
        out,
        &title,
        minutes,
        &series,
        &[Expect {
            eval_minutes: minutes_eval,
            alert: t.alert.clone(),
            alerts: vec![],
        }],
    );
    Ok(())
}

/// Which count a test series carries.
#[derive(Clone, Copy)]
enum Which {
    Total,
    Bad,
    Good,
}

/// Minutes of input, each phase `(minutes, total events a minute, bad events a minute)`.
type Phases = [(u64, f64, f64)];

/// Values for consecutive phases of constant per-minute increments.
fn phased_values(phases: &Phases, which: Which) -> String {
    let mut acc = 0.0;
    let mut parts = Vec::new();
    for (i, &(m, t, b)) in phases.iter().enumerate() {
        let n = match which {
            Which::Total => t,
            Which::Bad => b,
            Which::Good => t - b,
        };
        let count = if i + 1 == phases.len() {
            m
        } else {
            m.saturating_sub(1)
        };
        parts.push(format!("{}+{}x{count}", f64_text(acc), f64_text(n)));
        acc += n * m as f64;
    }
    parts.join(" ")
}

/// Input series for a ratio objective over `phases`.
fn ratio_series(r: &Ratio, job: &str, phases: &Phases) -> Result<(Vec<Series>, Labels), Error> {
    let name = &r.common.name;
    let by = &r.common.by;
    let sample = |s: &Selector, what: &str| s.sample().ok_or_else(|| no_sample(name, what));
    let excluding = |base: &Selector, narrow: &Selector, what: &str| {
        base.sample_excluding(narrow)
            .ok_or_else(|| no_sample(name, what))
    };
    let mut out = Vec::new();
    let push = |out: &mut Vec<Series>,
                e: &Events,
                labels: &[(String, String)],
                n: Which,
                le_n: Option<Which>| {
        let base = Events {
            le: None,
            ..e.clone()
        };
        out.push(Series(
            series_text(&base.series_name(), labels),
            phased_values(phases, n),
        ));
        if let (Some(le), Some(k)) = (&e.le, le_n) {
            let mut l = labels.to_vec();
            l.push(("le".to_string(), le.le()));
            out.push(Series(
                series_text(&e.series_name(), &l),
                phased_values(phases, k),
            ));
        }
    };
    let first;
    match &r.subset {
        Subset::Bad(b) if b.metric != r.total.metric => {
            first = with_target(job, &sample(&r.total.selector, "match `total`")?, by);
            push(&mut out, &r.total, &first, Which::Total, None);
            let l = with_target(job, &sample(&b.selector, "match `bad`")?, by);
            push(&mut out, b, &l, Which::Bad, None);
        }
        Subset::Bad(b) => {
            first = with_target(job, &sample(&b.selector, "match `bad`")?, by);
            push(&mut out, b, &first, Which::Bad, None);
            let l = with_target(
                job,
                &excluding(
                    &r.total.selector,
                    &b.selector,
                    "match `total` but not `bad`",
                )?,
                by,
            );
            push(&mut out, &r.total, &l, Which::Good, None);
        }
        Subset::Good(g) if g.metric != r.total.metric => {
            first = with_target(job, &sample(&r.total.selector, "match `total`")?, by);
            push(&mut out, &r.total, &first, Which::Total, None);
            let l = with_target(job, &sample(&g.selector, "match `good`")?, by);
            push(&mut out, g, &l, Which::Good, Some(Which::Good));
        }
        Subset::Good(g) if g.selector == r.total.selector => {
            // Only `le` narrows: one set of series, the bad observations slower than `le`.
            first = with_target(job, &sample(&g.selector, "match `good`")?, by);
            push(&mut out, g, &first, Which::Total, Some(Which::Good));
        }
        Subset::Good(g) => {
            first = with_target(job, &sample(&g.selector, "match `good`")?, by);
            push(&mut out, g, &first, Which::Good, Some(Which::Good));
            let l = with_target(
                job,
                &excluding(
                    &r.total.selector,
                    &g.selector,
                    "match `total` but not `good`",
                )?,
                by,
            );
            push(&mut out, g, &l, Which::Bad, Some(Which::Bad));
        }
    }
    Ok((out, first))
}

/// Events a minute in the generated ratio tests.
const N: f64 = 10_000.0;

/// Bad events a minute for a burn rate just above `burn` (and away from a rounding tie of
/// its `%.1f`).
fn bad_for(burn: f64, budget: f64) -> f64 {
    let mut bad = (burn * budget * N).ceil();
    while bad / N <= burn * budget && bad < N {
        bad += 1.0;
    }
    let printed = |bad: f64| bad / N / budget * 10.0;
    while (printed(bad).fract() - 0.5).abs() < 0.05 && bad < N {
        bad += 1.0;
    }
    bad.min(N)
}

struct AlertCase<'a> {
    fast: bool,
    alert: &'a String,
    severity: &'static str,
    runbook: &'a String,
}

fn cases(r: &Ratio) -> Vec<AlertCase<'_>> {
    [
        AlertCase {
            fast: true,
            alert: &r.alert_page,
            severity: "critical",
            runbook: &r.runbook_page,
        },
        AlertCase {
            fast: false,
            alert: &r.alert_ticket,
            severity: "warning",
            runbook: &r.runbook_ticket,
        },
    ]
    .into_iter()
    .filter(|c| {
        !(if c.fast {
            r.page_pairs()
        } else {
            r.ticket_pairs()
        })
        .is_empty()
    })
    .collect()
}

fn firing(
    r: &Ratio,
    c: &AlertCase<'_>,
    labels: &[(String, String)],
    value: f64,
    eval: u64,
) -> Expect {
    let prom_labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (prometheus_label(k), v.clone()))
        .collect();
    let (summary, parts) = ratio_alert_parts(r, c.fast);
    let (_, description) = render(&parts, &prom_labels, value);
    Expect {
        eval_minutes: eval,
        alert: c.alert.clone(),
        alerts: vec![(
            expected_labels(c.severity, &r.common.name, &r.common.by, labels),
            vec![
                ("summary".to_string(), summary),
                ("description".to_string(), description),
                ("runbook_url".to_string(), c.runbook.clone()),
            ],
        )],
    }
}

fn quiet(alert: &str, eval: u64) -> Expect {
    Expect {
        eval_minutes: eval,
        alert: alert.to_string(),
        alerts: vec![],
    }
}

fn ratio_tests(r: &Ratio, out: &mut String) -> Result<(), Error> {
    let name = &r.common.name;
    let b = r.budget();
    let all: Vec<_> = r.page_pairs().into_iter().chain(r.ticket_pairs()).collect();
    if all.is_empty() {
        return Ok(());
    }
    let (minutes, eval) = (40, 30);
    // 1. Above every factor: both alerts fire (pending first).
    let fmax = all.iter().map(|p| p.factor).fold(0.0, f64::max);
    let burn = (1.5 * fmax).min((1.0 / b + fmax) / 2.0);
    let bad = bad_for(burn, b);
    let (series, labels) = ratio_series(r, "violating", &[(minutes, N, bad)])?;
    let mut expects = Vec::new();
    for c in cases(r) {
        expects.push(quiet(c.alert, 1));
        expects.push(firing(r, &c, &labels, bad / N / b, eval));
    }
    write_test(
        out,
        &format!(
            "{name}: an error ratio of {}% (burn rate {:.1}) fires its burn-rate alerts",
            pct(bad / N),
            bad / N / b
        ),
        minutes,
        &series,
        &expects,
    );
    // 2. Between the two factors of an alert: its second pair alone fires it.
    for c in cases(r) {
        let pairs = if c.fast {
            r.page_pairs()
        } else {
            r.ticket_pairs()
        };
        let [p1, p2] = pairs.as_slice() else { continue };
        let bad = bad_for((p1.factor + p2.factor) / 2.0, b);
        if bad / N / b >= p1.factor {
            continue;
        }
        let (series, labels) = ratio_series(r, "violating", &[(minutes, N, bad)])?;
        write_test(
            out,
            &format!(
                "{name}: a burn rate of {:.1}, under {} but above {}, fires {} through its {}/{} windows",
                bad / N / b,
                p1.factor_text(),
                p2.factor_text(),
                c.alert,
                p2.long.text,
                p2.short.text
            ),
            minutes,
            &series,
            &[firing(r, &c, &labels, bad / N / b, eval)],
        );
    }
    // 3. A recent burst after a healthy history: the page alert's first pair (1h/5m) alone
    //    fires it, the second pair's long window (6h) still sees too few errors.
    //    (Its value is the 1h burn rate: the burst's errors over an hour's events.)
    if let Some(c) = cases(r).into_iter().find(|c| c.fast)
        && let [p1, p2] = r.page_pairs().as_slice()
    {
        let healthy = p2.long.seconds / 60;
        let burst = 20u64;
        let (l1, l2) = ((p1.long.seconds / 60) as f64, (p2.long.seconds / 60) as f64);
        let lower = p1.factor * b * l1 / burst as f64;
        let upper = p2.factor * b * l2 / burst as f64;
        let ratio = (lower * upper).sqrt().min(0.999);
        let bad = (ratio * N).round();
        let ratio = bad / N;
        let value = bad * burst as f64 / (N * l1) / b;
        let crossing = p1.factor * b * l1 / ratio;
        let tie = ((value * 10.0).fract() - 0.5).abs() < 0.05;
        if ratio > lower * 1.05 && ratio < upper * 0.95 && crossing + 5.0 <= burst as f64 && !tie {
            // Evaluated 2 minutes after the burst: the long window then holds the whole
            // burst whichever evaluation of the recording rule the alert sees.
            let phases = [(healthy, N, 0.0), (burst, N, bad), (2, N, 0.0)];
            let (series, labels) = ratio_series(r, "burst", &phases)?;
            let end = healthy + burst + 2;
            write_test(
                out,
                &format!(
                    "{name}: {burst} minutes at {}% errors after {} without fires {} through its {}/{} windows",
                    pct(ratio),
                    p2.long.text,
                    c.alert,
                    p1.long.text,
                    p1.short.text
                ),
                end,
                &series,
                &[quiet(c.alert, healthy), firing(r, &c, &labels, value, end)],
            );
        }
    }
    // 4. Within the target (half the budget), and an idle service failing every request.
    let bad_q = (0.5 * b * N).floor();
    let (mut series, _) = ratio_series(r, "within", &[(minutes, N, bad_q)])?;
    let mut title = format!("{name}: an error ratio of half the budget stays quiet");
    if !r.common.min_traffic.events.is_zero() {
        let idle = r.common.min_traffic.per_second() * 60.0 / 3.0;
        let (s, _) = ratio_series(r, "idle", &[(minutes, idle, idle)])?;
        series.extend(s);
        title.push_str(&format!(
            ", and so does a service failing every request under {}",
            r.common.min_traffic.text
        ));
    }
    let expects: Vec<Expect> = cases(r).iter().map(|c| quiet(c.alert, eval)).collect();
    write_test(out, &title, minutes, &series, &expects);
    Ok(())
}

fn tests(o: &Objectives) -> Result<String, Error> {
    let mut out = header(o, "promtool unit tests of the objectives' alerts");
    let _ = writeln!(out, "# Run: promtool test rules {TESTS_FILE}");
    let name = |path: &'static str| path.rsplit('/').next().unwrap_or(path);
    let _ = writeln!(
        out,
        "rule_files:\n  - ../{}\n  - ../{}",
        name(RECORDING_FILE),
        name(ALERTS_FILE)
    );
    out.push_str("evaluation_interval: 1m\n\ntests:\n");
    for t in &o.thresholds {
        threshold_tests(t, &mut out)?;
    }
    for r in &o.ratios {
        ratio_tests(r, &mut out)?;
    }
    Ok(out)
}

/// Generates the rules and their tests.
pub fn generate(o: &Objectives) -> Result<Generated, Error> {
    Ok(Generated {
        files: vec![
            (RECORDING_FILE.to_string(), recording(o)),
            (ALERTS_FILE.to_string(), alerts(o)),
            (TESTS_FILE.to_string(), tests(o)?),
            (
                crate::grafana::DASHBOARD_FILE.to_string(),
                crate::grafana::dashboard(o),
            ),
            (
                crate::cloudwatch::CLOUDWATCH_FILE.to_string(),
                crate::cloudwatch::template(o).0,
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formatting() {
        // Each value as Go's `%.4g` and Prometheus's `humanizeDuration` write it.
        for (v, g4, duration) in [
            (1.155, "1.155", "1.155s"),
            (385.0, "385", "6m 25s"),
            (1.2, "1.2", "1.2s"),
            (12345.0, "1.234e+04", "3h 25m 45s"),
            (0.385, "0.385", "385ms"),
            (125.0, "125", "2m 5s"),
            (0.0003, "0.0003", "300us"),
        ] {
            assert_eq!(go_g4(v), g4, "go_g4({v})");
            assert_eq!(humanize_duration(v), duration, "humanize_duration({v})");
        }
    }
}
