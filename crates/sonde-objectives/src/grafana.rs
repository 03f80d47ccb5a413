//! The Grafana SLO dashboard: for each objective, what it is, its current value, and for ratio
//! objectives the error budget remaining and the burn rates; thresholds at the objective's
//! numbers.
//!
//! It follows the house rules of `dashboards/README.md`: a `datasource` variable (any
//! Prometheus data source) used by every panel and query, `job` and `instance` variables, a
//! title, a description, a unit and thresholds on every panel, a stable `uid` (`sonde-slo`),
//! schema version 39, and a 24-column grid without overlaps.
//!
//! The queries read the recording rules generated from the same file where they exist (a
//! threshold objective's percentile over its window, a ratio objective's error ratio over 1h
//! and 6h); those series carry the objective's `by` labels only, so the `instance` variable
//! narrows them only when `instance` is one of them. The SLI and the budget over the
//! compliance window (`30d`) are computed from the raw series: those stat panels override the
//! dashboard's time range with the window (`timeFrom`) and total the counters over `$__range`.

use serde_json::{Value, json};

use crate::model::{
    BurnPair, Events, Objectives, Ratio, Subset, Threshold, Window, prometheus_label,
};
use crate::selector::promql_string;

/// Where the dashboard is written, relative to the output directory.
pub const DASHBOARD_FILE: &str = "dashboards/sonde-slo.json";

/// The dashboard's `uid` (stable: links and bookmarks survive re-provisioning).
pub const DASHBOARD_UID: &str = "sonde-slo";

/// The matchers every raw series gets: the dashboard's variables.
const TARGET: &str = "job=~\"$job\",instance=~\"$instance\"";

fn ds() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// A raw series selector with the dashboard's variables, the events' selector and `le`.
fn raw(e: &Events) -> String {
    let mut m = vec![TARGET.to_string()];
    m.extend(e.selector.promql_matchers());
    if let Some(le) = &e.le {
        m.push(format!("le=\"{}\"", le.le()));
    }
    format!("{}{{{}}}", e.series_name(), m.join(","))
}

/// A recording rule's series of one objective, narrowed by the variables it can be.
fn recorded(record: &str, objective: &str, by: &[String]) -> String {
    let mut m = vec![
        format!("objective={}", promql_string(objective)),
        "job=~\"$job\"".to_string(),
    ];
    if by.iter().any(|b| b == "instance") {
        m.push("instance=~\"$instance\"".to_string());
    }
    format!("{record}{{{}}}", m.join(","))
}

/// `{{job}} {{http_route}}` for the `by` labels.
fn legend(by: &[String]) -> String {
    by.iter()
        .map(|b| format!("{{{{{}}}}}", prometheus_label(b)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn per_instance_note(by: &[String]) -> &'static str {
    if by.iter().any(|b| b == "instance") {
        ""
    } else {
        " The objective is kept per job (its rules do not group by instance), so the instance variable does not narrow this panel."
    }
}

fn target(expr: &str, legend: &str, ref_id: &str, instant: bool, exemplar: bool) -> Value {
    json!({
        "datasource": ds(),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": !instant,
        "instant": instant,
        "refId": ref_id,
        "exemplar": exemplar,
        "format": "time_series"
    })
}

fn steps(steps: &[(&str, Option<f64>)]) -> Value {
    json!({
        "mode": "absolute",
        "steps": steps
            .iter()
            .map(|(color, value)| json!({"color": color, "value": value}))
            .collect::<Vec<_>>()
    })
}

fn runbook_links(links: &[(&str, &str)]) -> Value {
    Value::Array(
        links
            .iter()
            .map(|(alert, url)| {
                json!({"title": format!("Runbook: {alert}"), "url": url, "targetBlank": true})
            })
            .collect(),
    )
}

struct PanelSpec<'a> {
    title: String,
    description: String,
    unit: &'a str,
    thresholds: Value,
    targets: Vec<Value>,
    /// The runbook links; `Null` for a panel without the key.
    links: Value,
    grid: (u32, u32, u32, u32),
}

impl PanelSpec<'_> {
    /// A panel of `kind`: what every kind has, around its own field `defaults` (the unit and
    /// thresholds added) and `options`.
    fn panel(self, kind: &str, mut defaults: Value, options: Value) -> Value {
        let (x, y, w, h) = self.grid;
        defaults["unit"] = json!(self.unit);
        defaults["thresholds"] = self.thresholds;
        let mut panel = json!({
            "type": kind,
            "title": self.title,
            "description": self.description,
            "datasource": ds(),
            "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options,
            "targets": self.targets,
        });
        if !self.links.is_null() {
            panel["links"] = self.links;
        }
        panel
    }
}

fn stat(p: PanelSpec<'_>, decimals: Option<u32>, time_from: Option<&Window>) -> Value {
    let mut panel = p.panel(
        "stat",
        json!({
            "color": {"mode": "thresholds"},
            "mappings": [],
        }),
        json!({
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
            "colorMode": "background",
            "graphMode": if time_from.is_some() { "none" } else { "area" },
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
            "wideLayout": true,
            "showPercentChange": false
        }),
    );
    if let Some(d) = decimals {
        panel["fieldConfig"]["defaults"]["decimals"] = json!(d);
    }
    if let Some(w) = time_from {
        panel["timeFrom"] = json!(w.text);
        panel["hideTimeOverride"] = json!(false);
    }
    panel
}

fn timeseries(p: PanelSpec<'_>) -> Value {
    p.panel(
        "timeseries",
        json!({
            "color": {"mode": "palette-classic"},
            "custom": {
                "drawStyle": "line",
                "lineInterpolation": "linear",
                "lineWidth": 1,
                "fillOpacity": 10,
                "gradientMode": "none",
                "showPoints": "never",
                "pointSize": 5,
                "spanNulls": false,
                "axisPlacement": "auto",
                "axisLabel": "",
                "axisSoftMin": 0,
                "scaleDistribution": {"type": "linear"},
                "stacking": {"mode": "none", "group": "A"},
                "thresholdsStyle": {"mode": "dashed"}
            },
            "min": 0
        }),
        json!({
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": true,
                "calcs": ["mean", "max", "lastNotNull"]
            },
            "tooltip": {"mode": "multi", "sort": "desc"}
        }),
    )
}

fn heatmap(title: String, description: String, expr: String, grid: (u32, u32, u32, u32)) -> Value {
    let target = json!({
        "datasource": ds(),
        "editorMode": "code",
        "expr": expr,
        "legendFormat": "{{le}}",
        "range": true,
        "instant": false,
        "refId": "A",
        "exemplar": true,
        "format": "heatmap"
    });
    let p = PanelSpec {
        title,
        description,
        unit: "s",
        thresholds: steps(&[("green", None)]),
        targets: vec![target],
        links: Value::Null,
        grid,
    };
    p.panel(
        "heatmap",
        json!({
            "custom": {
                "hideFrom": {"legend": false, "tooltip": false, "viz": false},
                "scaleDistribution": {"type": "linear"}
            }
        }),
        json!({
            "calculate": false,
            "cellGap": 1,
            "cellValues": {"unit": "reqps"},
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "steps": 64,
                "exponent": 0.5,
                "fill": "dark-orange",
                "reverse": false,
                "scale": "exponential"
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": true},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": true, "showColorScale": false},
            "yAxis": {"axisPlacement": "left", "reverse": false, "unit": "s"}
        }),
    )
}

fn row(title: String, y: u32) -> Value {
    json!({
        "type": "row",
        "title": title,
        "collapsed": false,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": []
    })
}

/// Panel height below a row.
const H: u32 = 7;

fn threshold_panels(t: &Threshold, y: u32, heatmaps: &mut Vec<String>) -> Vec<Value> {
    let name = &t.common.name;
    let by = &t.common.by;
    let family = t.family();
    let record = format!(
        "objective:{family}:{}_rate{}",
        t.percentile.tag(),
        t.window.text
    );
    let series = recorded(&record, name, by);
    let th = t.threshold.seconds.to_f64();
    let objective = format!(
        "{} of {} ({}) below {} over {}",
        t.percentile.text, t.common.description, t.metric, t.threshold.text, t.window.text
    );
    let thresholds = steps(&[("green", None), ("red", Some(th))]);
    let links = runbook_links(&[(&t.alert, &t.runbook_url)]);
    let mut out = vec![row(format!("{name}: {objective}"), y)];
    out.push(stat(
        PanelSpec {
            title: format!("{name}: {} now", t.percentile.text),
            description: format!(
                "The objective `{name}`: {objective}. The current {} over {} (the recording rule {record}), the worst of the selected series; red above {}. {} fires when it stays above for {}.{}",
                t.percentile.text,
                t.window.text,
                t.threshold.text,
                t.alert,
                t.for_.text,
                per_instance_note(by)
            ),
            unit: "s",
            thresholds: thresholds.clone(),
            targets: vec![target(&format!("max({series})"), "worst", "A", false, false)],
            links: links.clone(),
            grid: (0, y + 1, 6, H),
        },
        Some(3),
        None,
    ));
    out.push(timeseries(PanelSpec {
        title: format!("{name}: {} over {}", t.percentile.text, t.window.text),
        description: format!(
            "{} of {} over {} per {}, with the objective's threshold ({}) drawn.{}",
            t.percentile.text,
            t.metric,
            t.window.text,
            t.common.by.join(", "),
            t.threshold.text,
            per_instance_note(by)
        ),
        unit: "s",
        thresholds,
        targets: vec![target(&series, &legend(by), "A", false, false)],
        links,
        grid: (6, y + 1, 12, H),
    }));
    let bucket = format!(
        "{family}_bucket{{{}}}",
        std::iter::once(TARGET.to_string())
            .chain(t.selector.promql_matchers())
            .collect::<Vec<_>>()
            .join(",")
    );
    heatmaps.push(family);
    out.push(heatmap(
        format!("{name}: distribution"),
        format!(
            "Distribution of {} (the objective's series): observations per second in each histogram bucket. The threshold {} is a bucket boundary, so the share above it is exact.",
            t.metric, t.threshold.text
        ),
        format!("sum by (le) (rate({bucket}[$__rate_interval]))"),
        (18, y + 1, 6, H),
    ));
    out
}

/// The error ratio of `r` over `range` from the raw series, grouped by the objective's labels.
fn raw_error_ratio(r: &Ratio, range: &str) -> String {
    let by = r.common.by_promql();
    let inc = |e: &Events| format!("sum by ({by}) (increase({}[{range}]))", raw(e));
    let total = inc(&r.total);
    match &r.subset {
        Subset::Bad(b) => format!("({} or 0 * {total}) / {total}", inc(b)),
        Subset::Good(g) => format!("1 - ({} or 0 * {total}) / {total}", inc(g)),
    }
}

fn burn_steps(r: &Ratio) -> Value {
    let mut s: Vec<(&str, f64)> = vec![("yellow", 1.0)];
    for p in r.ticket_pairs() {
        s.push(("orange", p.factor));
    }
    for p in r.page_pairs() {
        s.push(("red", p.factor));
    }
    s.sort_by(|a, b| a.1.total_cmp(&b.1));
    // One step per value, the most severe colour.
    let mut dedup: Vec<(&str, f64)> = Vec::new();
    for (c, v) in s {
        match dedup.last_mut() {
            Some(last) if (last.1 - v).abs() < 1e-9 => last.0 = c,
            _ => dedup.push((c, v)),
        }
    }
    let mut all: Vec<(&str, Option<f64>)> = vec![("green", None)];
    all.extend(dedup.into_iter().map(|(c, v)| (c, Some(round(v)))));
    steps(&all)
}

/// Rounds away binary noise (`14.399999999999999` → `14.4`).
fn round(v: f64) -> f64 {
    (v * 1e9).round() / 1e9
}

fn ratio_panels(r: &Ratio, y: u32, heatmaps: &mut Vec<String>) -> Vec<Value> {
    let name = &r.common.name;
    let by = &r.common.by;
    let budget = r.target.budget;
    let objective = format!(
        "{} of {} over {} (error budget {})",
        r.target.text, r.common.description, r.window.text, budget
    );
    let mut out = vec![row(format!("{name}: {objective}"), y)];
    let error = raw_error_ratio(r, "$__range");
    let page = r.page_pairs();
    let ticket = r.ticket_pairs();
    let mut links: Vec<(&str, &str)> = Vec::new();
    if !page.is_empty() {
        links.push((&r.alert_page, &r.runbook_page));
    }
    if !ticket.is_empty() {
        links.push((&r.alert_ticket, &r.runbook_ticket));
    }
    out.push(stat(
        PanelSpec {
            title: format!("{name}: SLI over {}", r.window.text),
            description: format!(
                "The objective `{name}`: {objective}. The share of good events over the last {} (this panel's time range is the compliance window, whatever the dashboard's), per {}; red below the target {}.",
                r.window.text,
                by.join(", "),
                r.target.text
            ),
            unit: "percentunit",
            thresholds: steps(&[("red", None), ("green", Some(r.target.fraction.to_f64()))]),
            targets: vec![target(&format!("1 - ({error})"), &legend(by), "A", true, false)],
            links: json!([]),
            grid: (0, y + 1, 6, H),
        },
        Some(3),
        Some(&r.window),
    ));
    out.push(stat(
        PanelSpec {
            title: format!("{name}: error budget remaining"),
            description: format!(
                "The share of the {} error budget ({} of the events may be bad) not yet spent over the last {}: 1 - (1 - SLI) / {budget}. Below 0 the objective is missed for the window.",
                r.window.text, budget, r.window.text
            ),
            unit: "percentunit",
            thresholds: steps(&[("red", None), ("green", Some(0.0))]),
            targets: vec![target(
                &format!("1 - ({error}) / {budget}"),
                &legend(by),
                "A",
                true,
                false,
            )],
            links: json!([]),
            grid: (6, y + 1, 6, H),
        },
        Some(1),
        Some(&r.window),
    ));
    let recorded_windows = r.sli_windows();
    let burn = |w: u64, ref_id: &str| {
        let window = Window::from_seconds(w);
        let expr = if recorded_windows.contains(&window) {
            format!(
                "{} / {budget}",
                recorded(
                    &format!("objective:sli_error:ratio_rate{}", window.text),
                    name,
                    by
                )
            )
        } else {
            format!("({}) / {budget}", raw_error_ratio(r, &window.text))
        };
        let l = legend(by);
        target(&expr, &format!("{} {l}", window.text), ref_id, false, false)
    };
    let mut alerts = String::new();
    if !page.is_empty() {
        alerts.push_str(&format!(
            " {} pages when {}.",
            r.alert_page,
            BurnPair::describe(&page)
        ));
    }
    if !ticket.is_empty() {
        alerts.push_str(&format!(
            " {} opens a ticket when {}.",
            r.alert_ticket,
            BurnPair::describe(&ticket)
        ));
    }
    out.push(timeseries(PanelSpec {
        title: format!("{name}: burn rate 1h and 6h"),
        description: format!(
            "How fast the error budget is spent: the error ratio over the last 1h and 6h divided by the budget {budget}. 1 spends it in exactly {}.{alerts}{}",
            r.window.text,
            per_instance_note(by)
        ),
        unit: "suffix:x",
        thresholds: burn_steps(r),
        targets: vec![burn(3600, "A"), burn(21_600, "B")],
        links: runbook_links(&links),
        grid: (12, y + 1, 12, H),
    }));
    // A histogram whose buckets a query reads gets its heatmap (the house rule).
    let bucket_of = |e: &Events| e.le.as_ref().map(|_| e.family());
    let histogram = match &r.subset {
        Subset::Good(e) | Subset::Bad(e) => bucket_of(e).map(|f| (f, e)),
    };
    if let Some((family, e)) = histogram
        && !heatmaps.contains(&family)
    {
        let base = Events {
            le: None,
            ..e.clone()
        };
        let selector = std::iter::once(TARGET.to_string())
            .chain(base.selector.promql_matchers())
            .collect::<Vec<_>>()
            .join(",");
        out.push(heatmap(
            format!("{name}: distribution"),
            format!(
                "Distribution of {}: observations per second in each histogram bucket; the objective counts those at most its le.",
                e.metric
            ),
            format!("sum by (le) (rate({family}_bucket{{{selector}}}[$__rate_interval]))"),
            (0, y + 1 + H, 24, H),
        ));
        heatmaps.push(family);
    }
    out
}

fn variable_series(o: &Objectives) -> String {
    if let Some(t) = o.thresholds.first() {
        format!("{}_count", t.family())
    } else if let Some(r) = o.ratios.first() {
        Events {
            le: None,
            ..r.total.clone()
        }
        .series_name()
    } else {
        "up".to_string()
    }
}

fn variable(name: &str, label: &str, query: String) -> Value {
    json!({
        "type": "query",
        "name": name,
        "label": label,
        "datasource": ds(),
        "query": query,
        "definition": query,
        "current": {},
        "hide": 0,
        "includeAll": true,
        "allValue": ".+",
        "multi": true,
        "options": [],
        "refresh": 2,
        "regex": "",
        "skipUrlSync": false,
        "sort": 1
    })
}

/// The dashboard's JSON.
pub fn dashboard_json(o: &Objectives) -> Value {
    let mut panels = Vec::new();
    let mut heatmaps = Vec::new();
    let mut y = 0;
    for t in &o.thresholds {
        panels.extend(threshold_panels(t, y, &mut heatmaps));
        y += 1 + H;
    }
    for r in &o.ratios {
        let p = ratio_panels(r, y, &mut heatmaps);
        let rows = if p.len() > 4 { 2 } else { 1 };
        panels.extend(p);
        y += 1 + H * rows;
    }
    for (i, p) in panels.iter_mut().enumerate() {
        p["id"] = json!(i + 1);
    }
    let series = variable_series(o);
    json!({
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": true,
            "hide": true,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard"
        }]},
        "description": format!(
            "Service level objectives of {}: for each, the objective, its current value, and for ratio objectives the error budget remaining and the burn rates. Generated by `sonde-objectives generate {}`; do not edit: change that file and generate again.",
            o.origin, o.origin
        ),
        "editable": true,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": null,
        "links": [{
            "asDropdown": true,
            "icon": "external link",
            "includeVars": true,
            "keepTime": true,
            "tags": ["sonde"],
            "targetBlank": false,
            "title": "sonde dashboards",
            "tooltip": "",
            "type": "dashboards",
            "url": ""
        }],
        "panels": panels,
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["sonde", "slo"],
        "templating": {"list": [
            {
                "type": "datasource",
                "name": "datasource",
                "label": "Data source",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": false,
                "multi": false,
                "options": [],
                "refresh": 1,
                "regex": "",
                "skipUrlSync": false
            },
            variable("job", "Job", format!("label_values({series}, job)")),
            variable(
                "instance",
                "Instance",
                format!("label_values({series}{{job=~\"$job\"}}, instance)")
            ),
        ]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "sonde / Service level objectives",
        "uid": DASHBOARD_UID,
        "version": 1,
        "weekStart": ""
    })
}

/// The dashboard's file content (pretty-printed JSON with a final newline).
pub fn dashboard(o: &Objectives) -> String {
    let mut s = serde_json::to_string_pretty(&dashboard_json(o)).unwrap_or_default();
    s.push('\n');
    s
}
