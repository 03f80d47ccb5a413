//! Comparisons, merges and reports, on `RunResult`s built from real sonde-core histograms filled
//! with samples of a seeded distribution (about one-second windows, as the engine cuts them).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use sonde_core::testing::assert_contains_all;
use sonde_core::{HistogramPoint, Precision, Registry, Unit};
use sonde_load::compare::{self, CompareOptions, Comparison, Metric, Verdict};
use sonde_load::report;
use sonde_load::result::{
    ErrorCounts, GeneratorStats, Quantiles, RequestStats, RunResult, SCHEMA, ServerRoute,
    ServerView, StoredHistogram, ThresholdOutcome, Window,
};

/// One kind of request in a synthetic run.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    /// Requests per one-second window.
    per_window: u64,
    /// Median latency in seconds (lognormal).
    median: f64,
    /// Lognormal shape (0.5: p99 about 3.2 × the median).
    sigma: f64,
    /// Every latency is multiplied by this (1.3 = 30 % slower).
    slower: f64,
    /// Probability that a request fails with a 503.
    error_p: f64,
}

const LIST: Spec = Spec {
    name: "list",
    per_window: 1000,
    median: 0.020,
    sigma: 0.5,
    slower: 1.0,
    error_p: 0.005,
};
const CREATE: Spec = Spec {
    name: "create",
    per_window: 500,
    median: 0.045,
    sigma: 0.4,
    slower: 1.0,
    error_p: 0.005,
};

/// How a synthetic run varies over time.
#[derive(Clone, Copy)]
struct Shape {
    windows: usize,
    /// Each window's latencies are multiplied by a factor drawn uniformly from this range
    /// (a server whose speed drifts: GC, neighbours). `(1, 1)` for a steady server.
    drift: (f64, f64),
    precision: Precision,
}

const STEADY: Shape = Shape {
    windows: 20,
    drift: (1.0, 1.0),
    precision: Precision::Standard,
};

/// Per-request recording state.
struct Rec {
    spec: Spec,
    h: sonde_core::Histogram,
    prev: HistogramPoint,
    count: u64,
    errors: u64,
    timeline: Vec<Window>,
}

fn window(p: &HistogramPoint, start: f64, errors: u64) -> Window {
    Window {
        start_seconds: start,
        seconds: 1.0,
        count: p.count(),
        errors,
        quantiles: Quantiles::from_fn(|q| p.quantile(q)),
        max: p.max(),
    }
}

fn stats(
    name: &str,
    point: &HistogramPoint,
    count: u64,
    errors: u64,
    timeline: Vec<Window>,
    secs: f64,
) -> RequestStats {
    let mut statuses = BTreeMap::new();
    statuses.insert("200".to_owned(), count - errors);
    if errors > 0 {
        statuses.insert("503".to_owned(), errors);
    }
    RequestStats {
        name: name.to_owned(),
        count,
        ok: count - errors,
        errors: ErrorCounts {
            http_5xx: errors,
            ..Default::default()
        },
        statuses,
        rate: count as f64 / secs,
        latency: StoredHistogram::from_point(point),
        timeline,
    }
}

/// A run of `specs` over `shape`, every latency drawn from the seeded distributions and
/// recorded in real sonde-core histograms (per request and for all together).
fn run(seed: u64, specs: &[Spec], shape: Shape) -> RunResult {
    run_tapped(seed, specs, shape, None)
}

/// [`run`], also recording every latency in `tap`.
fn run_tapped(
    seed: u64,
    specs: &[Spec],
    shape: Shape,
    tap: Option<&sonde_core::Histogram>,
) -> RunResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let reg = Registry::new();
    let fam = reg
        .histogram("http.client.request.duration")
        .unit(Unit::Seconds)
        .precision(shape.precision)
        .labels(["request"])
        .build()
        .expect("a histogram family");
    let total_h = reg
        .histogram("http.client.total.duration")
        .unit(Unit::Seconds)
        .precision(shape.precision)
        .build()
        .expect("a histogram family")
        .handle();
    let mut recs: Vec<Rec> = specs
        .iter()
        .map(|s| {
            let h = fam.with(&[s.name]);
            let prev = h.read();
            Rec {
                spec: *s,
                h,
                prev,
                count: 0,
                errors: 0,
                timeline: Vec::new(),
            }
        })
        .collect();
    let mut total_prev = total_h.read();
    let mut total_timeline = Vec::new();
    for w in 0..shape.windows {
        let factor = if shape.drift.0 == shape.drift.1 {
            shape.drift.0
        } else {
            rng.random_range(shape.drift.0..shape.drift.1)
        };
        let mut window_errors = 0;
        for r in &mut recs {
            let d = LogNormal::new(r.spec.median.ln(), r.spec.sigma).expect("a lognormal");
            let mut errors = 0;
            for _ in 0..r.spec.per_window {
                let v = d.sample(&mut rng) * r.spec.slower * factor;
                r.h.observe(v);
                total_h.observe(v);
                if let Some(t) = tap {
                    t.observe(v);
                }
                if rng.random_bool(r.spec.error_p) {
                    errors += 1;
                }
            }
            let now = r.h.read();
            r.timeline
                .push(window(&now.minus(&r.prev), w as f64, errors));
            r.prev = now;
            r.count += r.spec.per_window;
            r.errors += errors;
            window_errors += errors;
        }
        let now = total_h.read();
        total_timeline.push(window(&now.minus(&total_prev), w as f64, window_errors));
        total_prev = now;
    }
    let secs = shape.windows as f64;
    let mut requests: Vec<RequestStats> = recs
        .into_iter()
        .map(|r| {
            let p = r.h.read();
            stats(r.spec.name, &p, r.count, r.errors, r.timeline, secs)
        })
        .collect();
    requests.sort_by(|a, b| a.name.cmp(&b.name));
    let count: u64 = requests.iter().map(|r| r.count).sum();
    let errors: u64 = requests.iter().map(|r| r.error_count()).sum();
    let total = stats(
        "total",
        &total_h.read(),
        count,
        errors,
        total_timeline,
        secs,
    );
    let rate = count as f64 / secs;
    RunResult {
        schema: SCHEMA.to_owned(),
        tool_version: "test".to_owned(),
        started_at_unix_ms: 1_700_000_000_000 + seed,
        duration_seconds: secs,
        model: "open".to_owned(),
        target_rate: Some(rate),
        users: None,
        achieved_rate: rate,
        generator: GeneratorStats::default(),
        requests,
        total,
        thresholds: Vec::new(),
        server: None,
        merged_from: Vec::new(),
        interrupted: false,
    }
}

fn slower(specs: &[Spec], by: f64) -> Vec<Spec> {
    specs.iter().map(|s| Spec { slower: by, ..*s }).collect()
}

/// A baseline of list and create at a steady rate (seed `old_seed`), a run of the same server
/// `factor` times slower (seed `new_seed`), and their comparison at a 10 % tolerance.
fn slowdown(old_seed: u64, new_seed: u64, factor: f64) -> (RunResult, RunResult, Comparison) {
    let old = run(old_seed, &[LIST, CREATE], STEADY);
    let new = run(new_seed, &slower(&[LIST, CREATE], factor), STEADY);
    let c = compare::compare(&old, &new, &opts(0.10));
    (old, new, c)
}

fn opts(tolerance: f64) -> CompareOptions {
    CompareOptions {
        max_regression: tolerance,
    }
}

#[test]
fn damaged_results_are_not_judged_and_do_not_panic() {
    let old = run(1300, &[LIST], STEADY);
    let mut bad = run(1301, &[LIST], STEADY);
    bad.requests[0].latency.precision = "bogus".to_owned();
    bad.requests[0].latency.parts.cells = vec![(usize::MAX, u64::MAX)];
    let c = compare::compare(&old, &bad, &opts(0.10));
    let list = &c.rows[0];
    assert_eq!(list.deltas[0].verdict, Verdict::NotJudged);
    assert!(!c.regressed);
    // The total is intact, and judged.
    let total = c.rows[1].verdict();
    assert!(
        total != Verdict::NotJudged && total != Verdict::Regressed,
        "{c}"
    );
    assert!(compare::merge(&[("a".to_owned(), old), ("b".to_owned(), bad.clone())]).is_err());
    let t = report::summary_table(&bad);
    assert!(t.contains("list"), "{t}");
    let dir = tempfile::tempdir().expect("a temp dir");
    report::write_report(&bad, Some(&c), &dir.path().join("bad.md")).expect("a report");
}

fn verdicts(c: &compare::Comparison, v: Verdict) -> Vec<String> {
    c.rows
        .iter()
        .flat_map(|r| {
            r.deltas
                .iter()
                .filter(move |d| d.verdict == v)
                .map(move |d| format!("{} {}", r.name, d.metric))
        })
        .collect()
}

#[test]
fn two_runs_of_the_same_server_do_not_regress() {
    for seed in 0..8u64 {
        let old = run(2 * seed + 1, &[LIST, CREATE], STEADY);
        let new = run(2 * seed + 2, &[LIST, CREATE], STEADY);
        let c = compare::compare(&old, &new, &opts(0.10));
        assert!(!c.regressed, "seed {seed}: a false regression:\n{c}");
        assert_eq!(c.rows.len(), 3, "list, create, total");
        // Every figure was judged.
        assert!(verdicts(&c, Verdict::NotJudged).is_empty(), "{c}");
    }
}

#[test]
fn a_server_30_percent_slower_regresses() {
    for seed in 0..4u64 {
        let (_, _, c) = slowdown(100 + seed, 200 + seed, 1.3);
        assert!(c.regressed, "seed {seed}: 30 % slower went unnoticed:\n{c}");
        let flagged = verdicts(&c, Verdict::Regressed);
        for row in ["list", "create", "total"] {
            for q in ["p50", "p95", "p99"] {
                let want = format!("{row} {q}");
                assert!(flagged.contains(&want), "{want} not flagged:\n{c}");
            }
        }
        // Errors and rate did not change.
        assert!(
            !flagged
                .iter()
                .any(|f| f.ends_with("errors") || f.ends_with("rate"))
        );
        let text = c.to_string();
        assert!(text.contains("REGRESSED"), "{text}");
        let p50 = &c.rows[2].deltas[0];
        let change = p50.change.expect("a change");
        assert!((change - 0.3).abs() < 0.05, "total p50 changed by {change}");
    }
}

#[test]
fn a_small_slowdown_within_the_tolerance_passes_but_is_measurable() {
    for seed in 0..4u64 {
        let (old, new, c) = slowdown(300 + seed, 400 + seed, 1.05);
        assert!(!c.regressed, "seed {seed}: 5 % flagged at 10 %:\n{c}");
        // The noise estimate is not so wide that it hides everything: with a 1 % tolerance,
        // the same 5 % slowdown of the median is found.
        let strict = compare::compare(&old, &new, &opts(0.01));
        let flagged = verdicts(&strict, Verdict::Regressed);
        assert!(
            flagged.contains(&"total p50".to_owned()),
            "5 % at 1 % tolerance:\n{strict}"
        );
    }
}

#[test]
fn a_drifting_server_widens_the_noise_and_is_not_flagged() {
    let drifting = Shape {
        drift: (0.7, 1.6),
        ..STEADY
    };
    for seed in 0..8u64 {
        let old = run(500 + 2 * seed, &[LIST], drifting);
        let new = run(501 + 2 * seed, &[LIST], drifting);
        let c = compare::compare(&old, &new, &opts(0.10));
        assert!(
            !c.regressed,
            "seed {seed}: drift taken for a regression:\n{c}"
        );
    }
    // The timeline's spread, not only the counts, sets the noise: a drifting server's p50
    // noise is several times a steady one's.
    let noise = |shape: Shape| {
        let c = compare::compare(
            &run(600, &[LIST], shape),
            &run(601, &[LIST], shape),
            &opts(0.1),
        );
        c.rows[0].deltas[0].noise.expect("noise of p50")
    };
    let (steady, drift) = (noise(STEADY), noise(drifting));
    assert!(drift > 4.0 * steady, "steady ±{steady}, drifting ±{drift}");
}

#[test]
fn error_ratios_use_a_two_proportion_test() {
    let old = run(700, &[LIST], STEADY);
    // The same 0.5 % error ratio: not a regression.
    let same = run(701, &[LIST], STEADY);
    let c = compare::compare(&old, &same, &opts(0.10));
    let errors = &c.rows[0].deltas[3];
    assert_eq!(errors.metric, Metric::Errors);
    assert_ne!(errors.verdict, Verdict::Regressed, "{c}");
    // 0.5 % → 3 %: a regression of the errors only.
    let failing = run(
        702,
        &[Spec {
            error_p: 0.03,
            ..LIST
        }],
        STEADY,
    );
    let c = compare::compare(&old, &failing, &opts(0.10));
    assert!(c.regressed);
    assert_eq!(
        verdicts(&c, Verdict::Regressed),
        vec!["list errors".to_owned(), "total errors".to_owned()],
        "{c}"
    );
    assert!(
        c.to_string().contains(" pp"),
        "errors change in points:\n{c}"
    );
}

#[test]
fn different_loads_are_not_judged_on_rate() {
    let old = run(800, &[LIST], STEADY);
    let mut new = run(801, &[LIST], STEADY);
    new.target_rate = Some(2.0 * new.target_rate.expect("a target"));
    new.generator.saturated = true;
    let c = compare::compare(&old, &new, &opts(0.10));
    let rate = &c.rows[0].deltas[4];
    assert_eq!(rate.verdict, Verdict::NotJudged);
    assert!(
        c.notes.iter().any(|n| n.contains("target rates differ")),
        "{c}"
    );
    // A request only on one side is shown, not judged.
    let mut two = run(802, &[LIST, CREATE], STEADY);
    two.target_rate = old.target_rate;
    let c = compare::compare(&old, &two, &opts(0.10));
    let create = c
        .rows
        .iter()
        .find(|r| r.name == "create")
        .expect("a create row");
    assert!(
        create
            .deltas
            .iter()
            .all(|d| d.verdict == Verdict::NotJudged)
    );
    assert!(
        create.deltas[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("not in the baseline"))
    );
}

/// One sample of 40,000 latencies recorded twice: split between two machines (`a`, and `b`
/// 4× slower, as a machine behind a slower network would see), and all in one histogram
/// (`whole`, as if one machine had sent every request).
fn split_sample() -> (RunResult, RunResult, HistogramPoint) {
    let reg = Registry::new();
    let whole = reg
        .histogram("whole")
        .unit(Unit::Seconds)
        .build()
        .expect("a family")
        .handle();
    let a = run_tapped(900, &[LIST], STEADY, Some(&whole));
    let b = run_tapped(
        901,
        &[Spec {
            median: 0.08,
            ..LIST
        }],
        STEADY,
        Some(&whole),
    );
    (a, b, whole.read())
}

#[test]
fn merging_is_exact_and_averaging_is_not() {
    let (a, b, whole) = split_sample();
    let m = compare::merge(&[
        ("a.json".to_owned(), a.clone()),
        ("b.json".to_owned(), b.clone()),
    ])
    .expect("a merge");
    assert_eq!(
        m.merged_from,
        vec!["a.json".to_owned(), "b.json".to_owned()]
    );
    let mp = m.total.latency.to_point().expect("merged histogram");
    let wp = whole;
    assert_eq!(mp.count(), wp.count());
    // Cell for cell the histogram of the whole sample...
    let mc: Vec<(usize, u64)> = mp.cells().collect();
    let wc: Vec<(usize, u64)> = wp.cells().collect();
    assert_eq!(mc, wc);
    assert_eq!((mp.min(), mp.max()), (wp.min(), wp.max()));
    // ...so exactly its quantiles.
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let (mq, wq) = (
            mp.quantile(q).expect("merged quantile"),
            wp.quantile(q).expect("whole quantile"),
        );
        assert_eq!(mq, wq, "q{q}");
        // Averaging the two machines' percentiles is far off the truth.
        let avg = (a.total.latency.quantile(q).expect("a")
            + b.total.latency.quantile(q).expect("b"))
            / 2.0;
        if q == 0.5 || q == 0.99 {
            assert!(
                (avg - wq).abs() > 0.1 * wq,
                "q{q}: the average {avg} is close to the truth {wq}"
            );
        }
    }
    // Counts, errors, statuses and rates add up; windows combine by start.
    assert_eq!(m.total.count, a.total.count + b.total.count);
    assert_eq!(
        m.total.error_count(),
        a.total.error_count() + b.total.error_count()
    );
    assert_eq!(m.requests.len(), 1);
    let list = &m.requests[0];
    assert_eq!(
        list.statuses.get("200"),
        Some(&(a.requests[0].statuses["200"] + b.requests[0].statuses["200"]))
    );
    assert!((m.achieved_rate - (a.achieved_rate + b.achieved_rate)).abs() < 1e-9);
    assert!((list.rate - (a.requests[0].rate + b.requests[0].rate)).abs() < 1e-9);
    assert_eq!(list.timeline.len(), 20);
    for (i, w) in list.timeline.iter().enumerate() {
        assert_eq!(
            w.count,
            a.requests[0].timeline[i].count + b.requests[0].timeline[i].count
        );
        assert_eq!(w.start_seconds, i as f64);
        let max = a.requests[0].timeline[i]
            .max
            .expect("a max")
            .max(b.requests[0].timeline[i].max.expect("a max"));
        assert_eq!(w.max, Some(max));
    }
    assert_eq!(
        m.total.latency.parts.max,
        Some(
            a.total
                .latency
                .parts
                .max
                .expect("a max")
                .max(b.total.latency.parts.max.expect("a max"))
        )
    );
}

#[test]
fn merging_refuses_what_does_not_add_up() {
    let a = run(910, &[LIST], STEADY);
    let mut closed = run(911, &[LIST], STEADY);
    closed.model = "closed".to_owned();
    let e = compare::merge(&[("a".to_owned(), a.clone()), ("c".to_owned(), closed)])
        .expect_err("mixed models");
    assert!(e.to_string().contains("same scenario"), "{e}");
    let compact = run(
        912,
        &[LIST],
        Shape {
            precision: Precision::Compact,
            ..STEADY
        },
    );
    let e = compare::merge(&[("a".to_owned(), a), ("c".to_owned(), compact)])
        .expect_err("different precisions");
    assert!(
        e.to_string().contains("different histogram settings"),
        "{e}"
    );
    assert!(compare::merge(&[]).is_err());
}

fn with_extras(mut r: RunResult) -> RunResult {
    r.generator = GeneratorStats {
        late_requests: 1234,
        max_lag_seconds: 0.25,
        saturated: true,
        queued_requests: 17,
    };
    let list = r.request(Some("list")).expect("a list request").clone();
    let p99 = r.total.latency.quantile(0.99);
    r.thresholds = vec![
        ThresholdOutcome {
            threshold: "p99<1s".to_owned(),
            request: None,
            observed: p99,
            passed: true,
        },
        ThresholdOutcome {
            threshold: "errors<0.1%".to_owned(),
            request: Some("list".to_owned()),
            observed: Some(list.error_ratio()),
            passed: false,
        },
    ];
    let server_p50 = list.latency.quantile(0.5).map(|v| v * 0.8);
    r.server = Some(ServerView {
        url: "http://127.0.0.1:9464/metrics".to_owned(),
        routes: vec![ServerRoute {
            metric: "http_server_request_duration_seconds".to_owned(),
            labels: "http_route=\"/api/list\",method=\"GET\"".to_owned(),
            request: Some("list".to_owned()),
            count: list.count,
            quantiles: Quantiles {
                p50: server_p50,
                p95: None,
                p99: None,
            },
            bounds: Vec::new(),
        }],
        dependencies: Vec::new(),
        counters: vec![("db_queries_total".to_owned(), 42.0)],
        notes: vec!["a <note> & more".to_owned()],
    });
    r
}

#[test]
fn the_summary_table_says_what_matters() {
    let r = with_extras(run(1000, &[LIST, CREATE], STEADY));
    let t = report::summary_table(&r);
    assert_contains_all(
        &t,
        &[
            "open model",
            "achieved",
            "the generator could not keep up",
            "not the server",
            "17 requests waited for a free connection",
            "list",
            "create",
            "total",
            "p99",
            "5xx",
            "✓ p99<1s",
            "✗ errors<0.1% (list)",
            "1 threshold failed",
            "http_route=\"/api/list\"",
            "db_queries_total",
        ],
    );
    // The figures are the histograms': the p50 of `list` is in its row.
    let p50 = r.requests[1].latency.quantile(0.5).expect("p50");
    let line = t
        .lines()
        .find(|l| l.starts_with("list "))
        .expect("a row for list");
    assert!(line.contains(&report::format_seconds(p50)), "{line}");
    // The server row shows the client's p50 and the difference.
    let server = t
        .lines()
        .find(|l| l.contains("http_route"))
        .expect("a server row");
    assert!(server.contains('+'), "{server}");
}

/// A server percentile is only known to lie in its bucket: in the first bucket it shows as
/// `≤ bound` (interpolating from zero would invent a value), and where the client's percentile
/// falls in the same bucket the difference is `≈`, not a number the buckets cannot support. The
/// text table and the Markdown one say the same.
#[test]
fn server_percentiles_are_as_precise_as_the_services_buckets() {
    let mut r = with_extras(run(1000, &[LIST, CREATE], STEADY));
    let list = r.request(Some("list")).expect("a list request").clone();
    let c50 = list.latency.quantile(0.5).expect("p50");
    let view = r.server.as_mut().expect("a server view");
    let route = &mut view.routes[0];
    // p50: the first bucket, above the client's p50 (what a coarse service histogram gives).
    // p99: above the last bound, so no bucket to judge by: the plain difference.
    route.bounds = vec![c50 * 4.0, c50 * 8.0];
    route.quantiles = Quantiles {
        p50: Some(c50 * 2.0),
        p95: Some(c50 * 6.0),
        p99: Some(100.0),
    };
    let first = format!("≤{}", report::format_seconds(c50 * 4.0));
    let text = report::summary_table(&r);
    let row = text
        .lines()
        .find(|l| l.contains("http_route"))
        .expect("a server row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    let n = cells.len();
    assert_eq!(cells[n - 9], first, "{row}");
    assert_eq!(
        cells[n - 3],
        "≈",
        "the client's p50 lies in the server p50's bucket: {row}"
    );
    assert!(cells[n - 1].starts_with('-'), "{row}");
    assert!(
        text.contains("≈: the client's value lies in the bucket"),
        "{text}"
    );
    let md = report::markdown(&r, None, None);
    let md_row = md
        .lines()
        .find(|l| l.starts_with("| ") && l.contains("http_route"))
        .expect("a Markdown server row");
    assert!(
        md_row.contains(&format!("| {first} |")) && md_row.contains("| ≈ |"),
        "{md_row}"
    );

    // Without the bounds (a file from before they were kept): the interpolated figures.
    let view = r.server.as_mut().expect("a server view");
    view.routes[0].bounds.clear();
    let text = report::summary_table(&r);
    let row = text
        .lines()
        .find(|l| l.contains("http_route"))
        .expect("a row");
    assert!(!row.contains('≤') && !row.contains('≈'), "{row}");
}

/// Checks that `text` is well-formed XML (xmlparser's tokens, with tags balanced) and that
/// every coordinate is inside the SVG's view box.
fn assert_well_formed(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let (mut width, mut height) = (f64::INFINITY, f64::INFINITY);
    for token in xmlparser::Tokenizer::from(text) {
        match token.unwrap_or_else(|e| panic!("not XML: {e}")) {
            xmlparser::Token::Attribute { local, value, .. } => {
                let v = value.as_str();
                match local.as_str() {
                    "width" if stack.len() == 1 => width = v.parse().expect("a width"),
                    "height" if stack.len() == 1 => height = v.parse().expect("a height"),
                    "x" | "x1" | "x2" | "cx" => {
                        let x: f64 = v.parse().expect("a number");
                        assert!((0.0..=width).contains(&x), "x = {x} outside 0..{width}");
                    }
                    "y" | "y1" | "y2" | "cy" => {
                        let y: f64 = v.parse().expect("a number");
                        assert!((0.0..=height).contains(&y), "y = {y} outside 0..{height}");
                    }
                    "points" => {
                        for p in v.split_whitespace() {
                            let (x, y) = p.split_once(',').expect("x,y");
                            let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
                            assert!((0.0..=width).contains(&x) && (0.0..=height).contains(&y));
                        }
                    }
                    _ => {}
                }
            }
            xmlparser::Token::ElementStart { local, .. } => {
                if stack.is_empty() {
                    roots += 1;
                }
                stack.push(local.as_str().to_owned());
            }
            xmlparser::Token::ElementEnd { end, .. } => match end {
                xmlparser::ElementEnd::Open => {}
                xmlparser::ElementEnd::Close(_, name) => {
                    let open = stack.pop().expect("a close without an open");
                    assert_eq!(open, name.as_str(), "mismatched tags");
                }
                xmlparser::ElementEnd::Empty => {
                    stack.pop().expect("an element");
                }
            },
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "one root element");
}

#[test]
fn the_markdown_report_links_a_well_formed_chart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let old = run(1100, &[LIST, CREATE], STEADY);
    let r = with_extras(run(1101, &slower(&[LIST, CREATE], 1.3), STEADY));
    let c = compare::compare(&old, &r, &opts(0.10));
    let path = dir.path().join("reports/run.md");
    report::write_report(&r, Some(&c), &path).expect("a report");
    let md = std::fs::read_to_string(&path).expect("the report");
    let svg = std::fs::read_to_string(dir.path().join("reports/run.svg")).expect("the chart");
    assert!(md.contains("![latency over time and by percentile](run.svg)"));
    for want in [
        "| request | count | rate | p50 | p95 | p99 | max | errors | errors by class |",
        "| list |",
        "## Thresholds",
        "| ✗ | `errors<0.1%` | list |",
        "## The server's view",
        "## Comparison with the baseline",
        "| total | p99 |",
        "REGRESSED",
        "could not keep up",
        "a &lt;note> & more",
    ] {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    assert_well_formed(&svg);
    assert!(svg.contains("Latency over time") && svg.contains("Latency by percentile"));
    // Three lines over time (p50, p95, p99) and the percentile curve.
    assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
    // The percentile axis reaches p99.99 for 30,000 requests (log10 30000 → 5 decades).
    assert!(svg.contains(">99.99<"), "{svg}");

    // An empty run still makes a valid chart.
    let mut empty = run(1102, &[], STEADY);
    empty.total.timeline.clear();
    let p = dir.path().join("empty.md");
    report::write_report(&empty, None, &p).expect("a report of nothing");
    let svg = std::fs::read_to_string(dir.path().join("empty.svg")).expect("the chart");
    assert_well_formed(&svg);
    assert!(svg.contains("no latency recorded"));
    assert!(report::summary_table(&empty).contains("total"));
}

fn sonde_load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sonde-load"))
        .args(args)
        .output()
        .expect("sonde-load runs")
}

fn write(r: &RunResult, dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    r.write(&p).expect("a result file");
    p.display().to_string()
}

#[test]
fn the_compare_and_merge_commands() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let old = write(&run(1200, &[LIST], STEADY), dir.path(), "old.json");
    let same = write(&run(1201, &[LIST], STEADY), dir.path(), "same.json");
    let slow = write(
        &run(1202, &slower(&[LIST], 1.3), STEADY),
        dir.path(),
        "slow.json",
    );
    let out = sonde_load(&["compare", &old, &same]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("no regression"), "{stdout}");
    let out = sonde_load(&["compare", &old, &slow]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("REGRESSED"), "{stdout}");
    // A 50 % tolerance lets 30 % through.
    let out = sonde_load(&["compare", &old, &slow, "--max-regression", "50%"]);
    assert_eq!(out.status.code(), Some(0));
    let missing = dir.path().join("nope.json").display().to_string();
    let out = sonde_load(&["compare", &old, &missing]);
    assert_eq!(out.status.code(), Some(2));

    let merged = dir.path().join("merged.json");
    let out = sonde_load(&[
        "merge",
        &old,
        &same,
        "--json",
        &merged.display().to_string(),
        "--threshold",
        "p99<10s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = RunResult::read(&merged).expect("the merged result");
    assert_eq!(m.total.count, 40_000);
    assert_eq!(m.merged_from.len(), 2);
    assert!(String::from_utf8_lossy(&out.stdout).contains("merged from 2 runs"));
}

/// Over many seeds, at sizes where the noise is comparable to the tolerance: identical servers
/// are never flagged, a real slowdown of half the tolerance almost never, a 30 % one almost
/// always.
#[test]
fn error_rates_over_many_seeds() {
    for (label, per_window, windows, drift) in [
        ("500 requests, steady", 50u64, 10usize, (1.0, 1.0)),
        ("4,000 requests, drifting", 200, 20, (0.8, 1.3)),
    ] {
        let spec = Spec { per_window, ..LIST };
        let shape = Shape {
            windows,
            drift,
            ..STEADY
        };
        let (mut same, mut half, mut found) = (0, 0, 0);
        let n = 60u64;
        for seed in 0..n {
            let old = run(20_000 + 3 * seed, &[spec], shape);
            let new = run(20_001 + 3 * seed, &[spec], shape);
            let by = |f: f64| Spec { slower: f, ..spec };
            let slow5 = run(20_002 + 3 * seed, &[by(1.05)], shape);
            let slow30 = run(20_002 + 3 * seed, &[by(1.3)], shape);
            same += usize::from(compare::compare(&old, &new, &opts(0.1)).regressed);
            half += usize::from(compare::compare(&old, &slow5, &opts(0.1)).regressed);
            found += usize::from(compare::compare(&old, &slow30, &opts(0.1)).regressed);
        }
        assert_eq!(
            same, 0,
            "{label}: identical servers flagged {same} times in {n}"
        );
        assert!(half <= 2, "{label}: 5 % slower flagged {half} times in {n}");
        assert!(
            found >= 57,
            "{label}: 30 % slower found only {found} times in {n}"
        );
    }
}
