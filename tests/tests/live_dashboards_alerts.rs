//! The dashboards and alerts against live data: the example service's workload runs in-process,
//! served by sonde's Prometheus exporter and scraped every second by a real Prometheus that loads
//! the rule files of `alerts/`: the hand-written ones and those generated from the example
//! service's objectives file (`objectives.*.yml`; its SLO dashboard, `sonde-slo`, is evaluated
//! with the others).
//!
//! **Shortened windows.** Real windows are minutes to days, so Prometheus loads copies of the
//! rule files in which every range and every `for:` is divided by [`DIVISOR`] (240: an hour
//! becomes 15 s, 5 minutes 5 s, the smallest range [`MIN_RANGE_SECS`] so that a rate has a few
//! scrapes), by `sonde_tests::grafana::shorten_rules`. Nothing else changes: expressions,
//! thresholds, recorded names.
//!
//! **Every query must return data.** With the workload running, each query of each dashboard
//! (the template variables replaced: `$job` and `$instance` by the scraped target's,
//! `$__rate_interval` by [`RATE_INTERVAL`]) and each recording rule (its expression, and the
//! recorded series) must return at least one series; the `job` and `instance` variables must
//! offer the target. Alert expressions return nothing while all is well, by construction, so
//! for them:
//! - every rule must evaluate without error (`health: ok` in `/api/v1/rules`), and
//! - every *operand* of the alert's comparisons must return series (`a > 0.01 and b >= 0.1`
//!   gives `a` and `b`; see `sonde_tests::grafana::comparison_operands`): what the alert watches
//!   exists and has the labels the rule expects, whether or not it fires. A few operands only
//!   exist once something went wrong (a counter of dropped points is created by the first
//!   drop); those must return series once the faults below have happened, and the test fails
//!   if one never does.
//!
//! The host dashboard and rules are evaluated by a separate test over the host metrics of
//! sonde-agent's collectors (`sonde-host`, the agent's own code, run in-process with the agent's
//! own-process metrics, as the agent serves them).
//!
//! A third test serves the axum example (`crates/sonde-example-axum`, instrumented by
//! `HttpServerLayer::new(metrics)` alone) under traffic and checks that every panel keyed by
//! `http_route` shows its route templates (`/users/{id}`), never a raw path.
//!
//! **Faults.** Then the test breaks things and waits for the matching alerts to fire (state
//! `firing` in `/api/v1/alerts`), and checks that unrelated alerts stay silent:
//! 1. an error burst from the payments API (`set_api_error_rate(0.9)`), cold starts of the
//!    simulated function fleet taking 1.5 s, the OTLP receiver answering 503, and a label with
//!    unbounded values: the generated `SloErrorsBudgetBurnFast` (the `errors` objective, per
//!    route), `SloAvailabilityBudgetBurnFast` and `ColdStartP95High`, and
//!    `ExternalApiErrorRatioHigh`, `SondeExporterFailing`, `SondeExporterDroppingPoints`,
//!    `SondeSeriesOverflow`; and no latency alert;
//! 2. the API stops failing, the database slows down (`set_db_delay(600 ms)`) and the API too
//!    (`set_api_delay(1.2 s)`): the generated `DbLatencyP95High`, `ApiLatencyP95High` and
//!    `ApiLatencyP99High`, and `ExternalApiLatencyP95High`;
//! 3. the service stops serving metrics: `TargetDown`.
//!
//! **Verdicts.** The service loads the example's objectives as `sonde-example-service` does
//! (their thresholds become bucket boundaries before the workload registers its histograms)
//! and its `/report` judges them over one 5-second window ([`REPORT_WINDOW`]): the latency
//! objectives (`db-latency-p95`, `api-latency-p95`) are `met` on the healthy service, `errors`
//! is `violated` during the error burst (the `/orders` group burning its budget faster than the
//! page rate), the latency objectives are `violated` during the slowdown and `met` again soon
//! after the database and the API are fast again (before step 3).
//!
//! Before the faults, none of those alerts fires, nor `SloApiFastRequestsBudgetBurnFast` or
//! `SloCacheHitsBudgetBurnSlow` (the example's requests are fast, its cache hits about 80 % of
//! lookups). The slow-burn tickets of availability are not checked: the example's baseline of
//! failed payments (0.15 % of requests) is above the 0.1 % budget, as a 3-day burn rate should
//! say.
//!
//! Phase 1 also runs sonde-agent's StatsD server (in-process, on the service's registry) under a
//! steady stream of well-formed lines, then sends it malformed lines and more metric names than
//! its limit (`SondeStatsdParseErrorsHigh`, `SondeStatsdDropping`), and holds file descriptors
//! open up to 92% of the process's limit (`ProcessFileDescriptorsHigh`). `TargetDown` watches
//! only sonde's jobs (`up{job=~"sonde.*"}`); the test replaces that selector with its own job,
//! as alerts/README.md tells operators to. `process_memory_limit_bytes` exists only under a
//! cgroup memory limit: without one, the queries over it are checked to evaluate, not for data
//! (the test prints so), and `ProcessMemoryHigh` is covered by its promtool cases only (pushing
//! the test process near a real memory limit would risk the OOM killer).
#![allow(clippy::unwrap_used)] // tests panic on failure by design

use sonde::Component as _;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sonde::otlp::{OtlpMetricsBuilder, OtlpTransport, Protocol};
use sonde::{Registry, Resource, Unit};
use sonde_tests::example::AXUM_ROUTES;
use sonde_tests::grafana::{
    Dashboard, Rule, comparison_operands, load_rules, rule_files, selectors, shorten_rules,
    substitute,
};
use sonde_tests::otlp::{Fault, OtlpReceiver};
use sonde_tests::prometheus::Prometheus;
use sonde_tests::ticker::Ticker;
use sonde_tests::{TempDir, percent_encode};

/// Rule windows and `for:` durations are divided by this.
const DIVISOR: u64 = 240;
/// The shortest range after shortening: five scrapes.
const MIN_RANGE_SECS: u64 = 5;
/// What `$__rate_interval` becomes (Grafana: at least four scrape intervals).
const RATE_INTERVAL: &str = "10s";
/// The scrape job of the example service.
const JOB: &str = "example-service";
/// The share of payment API calls that fail while the service is healthy.
const BASELINE_API_ERRORS: f64 = 0.01;
/// The selector of `TargetDown` in alerts/sonde.self.yml (sonde's scrape jobs).
const TARGET_DOWN_SELECTOR: &str = r#"up{job=~"sonde.*"}"#;
/// Metrics that exist only in some environments: queries over them (and over the rules recording
/// them) must evaluate, but need data only where the scraped target exposes them.
const OPTIONAL_METRICS: [&str; 1] = [
    // The cgroup memory limit: absent when the process has none.
    "process_memory_limit_bytes",
];
/// The rule file and dashboard fed by sonde-agent's host metrics.
const HOST_RULES: &str = "sonde.host.yml";
const HOST_DASHBOARD: &str = "sonde-host";
/// `/report`'s one sliding window here: the objectives are judged over it.
const REPORT_WINDOW: Duration = Duration::from_secs(5);
/// The objectives a slow database and API violate (`/report` verdicts checked).
const LATENCY_OBJECTIVES: [&str; 2] = ["db-latency-p95", "api-latency-p95"];

// ---------------------------------------------------------------------------------------------
// Prometheus helpers

/// Evaluates `expr` now: the number of series (1 for a scalar), or Prometheus's error.
fn try_query(prom: &Prometheus, expr: &str) -> Result<usize, String> {
    let url = format!(
        "http://{}/api/v1/query?query={}",
        prom.addr,
        percent_encode(expr)
    );
    let reply = sonde_tests::http::get(&url, &[]);
    let body: Value =
        serde_json::from_slice(&reply.body).map_err(|e| format!("{e}: {}", reply.text()))?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(match &body["data"]["result"] {
        Value::Array(a) => a.len(),
        _ => 1,
    })
}

/// Polls `expr` until it returns series or `deadline` passes: `Ok(true)` when it did.
fn has_series_by(prom: &Prometheus, expr: &str, deadline: Instant) -> Result<bool, String> {
    loop {
        if try_query(prom, expr)? > 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Alert name -> state (`pending`, `firing`) of the alerts whose `job` label is `job`.
fn alert_states(prom: &Prometheus, job: &str) -> BTreeMap<String, String> {
    let body = prom.api("alerts", &[]);
    let mut out = BTreeMap::new();
    for a in body["data"]["alerts"].as_array().into_iter().flatten() {
        if a["labels"]["job"] == job {
            let name = a["labels"]["alertname"].as_str().unwrap().to_owned();
            let state = a["state"].as_str().unwrap().to_owned();
            // Several series of one alert: firing wins.
            let e = out.entry(name).or_insert(state.clone());
            if state == "firing" {
                *e = state;
            }
        }
    }
    out
}

fn firing(prom: &Prometheus, job: &str) -> BTreeSet<String> {
    alert_states(prom, job)
        .into_iter()
        .filter(|(_, s)| s == "firing")
        .map(|(n, _)| n)
        .collect()
}

/// Waits until every alert of `expected` fires for `job`; returns how long it took.
fn wait_for_alerts(prom: &Prometheus, job: &str, expected: &[&str], timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = firing(prom, job);
        if expected.iter().all(|a| now.contains(*a)) {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let missing: Vec<&&str> = expected.iter().filter(|a| !now.contains(**a)).collect();
            panic!(
                "after {timeout:?}, {missing:?} still not firing; alerts now: {:?}\nprometheus log: {}",
                alert_states(prom, job),
                prom.log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until Prometheus has evaluated every rule once, and returns the rules that failed.
fn rule_errors(prom: &Prometheus) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = prom.api("rules", &[]);
        let mut unknown = 0;
        let mut errors = Vec::new();
        let mut count = 0;
        for g in body["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                count += 1;
                match r["health"].as_str() {
                    Some("ok") => {}
                    Some("unknown") => unknown += 1,
                    _ => errors.push(format!("{}: {}", r["name"], r["lastError"])),
                }
            }
        }
        assert!(count > 0, "Prometheus loaded no rule: {}", prom.log());
        if unknown == 0 || Instant::now() > deadline {
            return errors;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Rule files with every window and `for:` divided by [`DIVISOR`], written to `dir`; `host`
/// selects the host rules (only) or every other file.
fn shortened_rule_files(dir: &TempDir, host: bool) -> Vec<String> {
    rule_files()
        .into_iter()
        .filter(|f| f.ends_with(HOST_RULES) == host)
        .map(|f| {
            let mut text = std::fs::read_to_string(&f).unwrap();
            if text.contains("alert: TargetDown") {
                // What alerts/README.md tells operators whose jobs are not named sonde-*.
                assert!(
                    text.contains(TARGET_DOWN_SELECTOR),
                    "{}: TargetDown no longer uses {TARGET_DOWN_SELECTOR}",
                    f.display()
                );
                text = text.replace(TARGET_DOWN_SELECTOR, &format!(r#"up{{job=~"{JOB}"}}"#));
            }
            let out = dir.0.join(f.file_name().unwrap());
            std::fs::write(&out, shorten_rules(&text, DIVISOR, MIN_RANGE_SECS)).unwrap();
            out.to_string_lossy().into_owned()
        })
        .collect()
}

/// A Prometheus scraping `target` as `job` with the [shortened](shortened_rule_files) rule files
/// (`host`: the host rules only, else every other file), once it has the target up; with the
/// paths of the rule files and their directory (removed on drop).
fn start_with_shortened_rules(
    target: SocketAddr,
    job: &str,
    host: bool,
) -> (Prometheus, Vec<String>, TempDir) {
    let dir = TempDir::new(if host {
        "live-host-rules"
    } else {
        "live-rules"
    });
    let rule_paths = shortened_rule_files(&dir, host);
    let prom = start_prometheus(target, job, &rule_paths);
    prom.wait_for_series(
        &format!("up{{job=\"{job}\"}} == 1"),
        Duration::from_secs(20),
    );
    (prom, rule_paths, dir)
}

/// The rules of the rule files at `paths`.
fn load_rule_files(paths: &[String]) -> Vec<Rule> {
    paths
        .iter()
        .flat_map(|p| load_rules(std::path::Path::new(p)))
        .collect()
}

/// The dashboard variables, as Grafana sets them, for the target `instance` of `job`.
fn dashboard_vars<'a>(job: &'a str, instance: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("datasource", "prometheus"),
        ("job", job),
        ("instance", instance),
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "5s"),
        ("__range", "1m"),
    ]
}

fn start_prometheus(target: SocketAddr, job: &str, rules: &[String]) -> Prometheus {
    let scrape =
        format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n");
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    Prometheus::start_with_scrape_configs(&scrape, &rules, &["--enable-feature=exemplar-storage"])
}

// ---------------------------------------------------------------------------------------------
// Evaluating dashboards and rules

/// What evaluating dashboards and rules found.
#[derive(Default)]
struct Findings {
    /// Queries that returned nothing or failed: the test fails on any.
    failures: Vec<String>,
    /// Alert operands that returned nothing yet (checked again after the faults).
    pending: Vec<(String, String)>,
    /// Queries evaluated.
    evaluated: usize,
    /// Names (metrics, recorded series) the target does not expose here: queries over them only
    /// need to evaluate.
    absent: Vec<String>,
    /// Queries that evaluated without data because of `absent`.
    skipped: Vec<String>,
}

impl Findings {
    /// Whether `expr` reads a name of [`Findings::absent`].
    fn reads_absent(&self, expr: &str) -> bool {
        self.absent.iter().any(|n| {
            expr.match_indices(n.as_str()).any(|(i, _)| {
                !expr[i + n.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        })
    }
}

/// The [`OPTIONAL_METRICS`] `job` does not expose, and the recording rules built on them.
fn absent_optional(prom: &Prometheus, job: &str, rules: &[Rule]) -> Vec<String> {
    let mut absent: Vec<String> = OPTIONAL_METRICS
        .iter()
        .filter(|m| try_query(prom, &format!("{m}{{job=\"{job}\"}}")).unwrap() == 0)
        .map(|m| (*m).to_owned())
        .collect();
    for r in rules {
        if let Some(record) = &r.record
            && absent.iter().any(|a| r.expr.contains(a.as_str()))
        {
            absent.push(record.clone());
        }
    }
    absent
}

/// Checks that `label_values(SELECTOR, LABEL)` of a dashboard variable offers `want`.
fn check_variable(
    prom: &Prometheus,
    d: &Dashboard,
    name: &str,
    vars: &[(&str, &str)],
    want: &str,
    f: &mut Findings,
) {
    let q = d.variable_query(name).unwrap_or_default();
    let q = substitute(&q, vars);
    let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    else {
        f.failures.push(format!(
            "{}: variable {name}: {q:?} is not label_values(...)",
            d.file_name()
        ));
        return;
    };
    let (selector, label) = inner.rsplit_once(',').unwrap();
    let body = prom.api("series", &[("match[]", selector.trim())]);
    let values: BTreeSet<String> = body["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s[label.trim()].as_str().map(str::to_owned))
        .collect();
    if !values.contains(want) {
        f.failures.push(format!(
            "{}: variable {name} ({q}) offers {values:?}, not {want:?}",
            d.file_name()
        ));
    }
}

fn evaluate_dashboards(
    prom: &Prometheus,
    dashboards: &[Dashboard],
    vars: &[(&str, &str)],
    deadline: Instant,
    f: &mut Findings,
) {
    let lookup = |n: &str| vars.iter().find(|(k, _)| *k == n).unwrap().1;
    for d in dashboards {
        check_variable(prom, d, "job", vars, lookup("job"), f);
        check_variable(prom, d, "instance", vars, lookup("instance"), f);
        for q in d.queries() {
            let expr = substitute(&q.expr, vars);
            assert!(!expr.contains('$'), "unexpanded variable in {expr}");
            f.evaluated += 1;
            match has_series_by(prom, &expr, deadline) {
                Ok(true) => {}
                Ok(false) if f.reads_absent(&expr) => f.skipped.push(expr),
                Ok(false) => f.failures.push(format!(
                    "{} / {} / {}: no data\n    {expr}",
                    d.file_name(),
                    q.panel,
                    q.ref_id
                )),
                Err(e) => f.failures.push(format!(
                    "{} / {} / {}: {e}\n    {expr}",
                    d.file_name(),
                    q.panel,
                    q.ref_id
                )),
            }
        }
    }
}

fn evaluate_rules(
    prom: &Prometheus,
    rules: &[Rule],
    job: &str,
    deadline: Instant,
    f: &mut Findings,
) {
    for r in rules {
        let name = format!("{} ({})", r.name(), r.file_name());
        let mut exprs = Vec::new();
        if let Some(record) = &r.record {
            exprs.push((r.expr.clone(), true));
            if selectors(&r.expr).is_empty() {
                // A constant (the alerts' minimum traffic): no job label.
                exprs.push((record.clone(), true));
            } else {
                exprs.push((format!("{record}{{job=\"{job}\"}}"), true));
            }
        } else {
            // The whole expression evaluates (its result is empty while all is well)...
            f.evaluated += 1;
            if let Err(e) = try_query(prom, &r.expr) {
                f.failures.push(format!("{name}: {e}\n    {}", r.expr));
            }
            // ...and what it compares has data.
            for operand in comparison_operands(&r.expr) {
                exprs.push((operand, false));
            }
        }
        for (expr, required) in exprs {
            f.evaluated += 1;
            // Recorded series may still be on their way; an operand that only a fault creates
            // need not be waited for (it is checked again after the faults).
            let deadline = if required {
                deadline
            } else {
                deadline.min(Instant::now() + Duration::from_secs(2))
            };
            match has_series_by(prom, &expr, deadline) {
                Ok(true) => {}
                Ok(false) if f.reads_absent(&expr) => f.skipped.push(expr),
                Ok(false) if required => f.failures.push(format!("{name}: no data\n    {expr}")),
                Ok(false) => f.pending.push((name.clone(), expr)),
                Err(e) => f.failures.push(format!("{name}: {e}\n    {expr}")),
            }
        }
    }
}

fn report(what: &str, f: &Findings) {
    assert!(
        f.failures.is_empty(),
        "{what}: {} of {} queries failed:\n{}",
        f.failures.len(),
        f.evaluated,
        f.failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Simulated parts of the service

/// A fleet of function instances recording the FaaS metrics `sonde_instrument::Faas` defines:
/// an invocation every 40 ms, every fifth on a new instance (a cold start) whose initialization
/// takes about `init` seconds. (`Faas` itself measures initialization from the start of the
/// process, which in a test is the test binary's.)
struct Fleet {
    init_micros: Arc<AtomicU64>,
    _invocations: Ticker,
}

impl Fleet {
    fn start(reg: &Registry) -> Fleet {
        // The families as Faas registers them; registering the same definitions again gives
        // the same families (a drift would fail here).
        let _faas = sonde::instrument::Faas::install(reg).unwrap();
        let invocations = sonde::testing::labelled_counter(
            reg,
            "faas.invocations",
            &["faas.trigger", "faas.coldstart"],
        );
        let coldstarts =
            sonde::testing::labelled_counter(reg, "faas.coldstarts", &["faas.trigger"]);
        let init = sonde::testing::seconds_histogram(reg, "faas.init_duration", &[]).handle();
        // What each invocation costs on a 512 MB x86_64 function at list prices, into the
        // family a Faas with a cost model registers.
        let model = sonde::instrument::CostModel {
            memory_mb: 512,
            architecture: sonde::instrument::Architecture::X86_64,
            pricing: sonde::instrument::LambdaPricing::default(),
        };
        let _priced = sonde::instrument::Faas::install(reg)
            .unwrap()
            .with_cost_model(model, reg)
            .unwrap();
        let cost = reg
            .counter_f64("faas.invocation.cost")
            .unit(Unit::Count("{USD}".into()))
            .labels(["faas.trigger"])
            .build()
            .unwrap()
            .with(&["http"]);
        let init_micros = Arc::new(AtomicU64::new(250_000));
        let m = init_micros.clone();
        let ticker = Ticker::start(Duration::from_millis(40), move |n| {
            let cold = n.is_multiple_of(5);
            if cold {
                coldstarts.with(&["http"]).inc();
                // Spread +-40% around the setting.
                let spread = 0.6 + 0.8 * ((n * 7919) % 100) as f64 / 100.0;
                init.observe(m.load(Ordering::Relaxed) as f64 / 1e6 * spread);
            }
            invocations
                .with(&["http", if cold { "true" } else { "false" }])
                .inc();
            cost.add(model.cost(Duration::from_millis(35)));
        });
        Fleet {
            init_micros,
            _invocations: ticker,
        }
    }

    fn set_init(&self, d: Duration) {
        self.init_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The second example, `sonde-example-axum-sqlx` (axum on sqlx/SQLite, moka, reqwest, its
/// Tokio runtime read by `TokioRuntimeMetrics`), served on loopback and recording into the same
/// registry, with a steady trickle of product reads and orders (payments never declined here:
/// the external-API alert must stay quiet while all is well); and a moka cache too small for its
/// keys (`MokaCache`: hits, misses, size evictions, entries, weighted size).
struct AsyncParts {
    traffic: Ticker,
    runtime: Option<tokio::runtime::Runtime>,
    _db: TempDir,
}

impl AsyncParts {
    fn start(reg: &Registry) -> AsyncParts {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = TempDir::new("live-shop");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let shop_addr = listener.local_addr().unwrap();
        let shop = runtime
            .block_on(sonde_example_axum_sqlx::Shop::open(
                reg,
                &db.0.join("shop.db"),
                4,
                &format!("http://{shop_addr}"),
            ))
            .unwrap()
            .declining_every(0);
        let app = shop.app(sonde::instrument::HttpServerMetrics::install(reg).unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        let cache = sonde::instrument::MokaCache::new(
            reg,
            "sessions",
            moka::sync::Cache::builder().max_capacity(50),
        )
        .unwrap();
        let handle = runtime.handle().clone();
        let traffic = Ticker::start(Duration::from_millis(5), move |n| {
            // 200 keys over 50 places: hits, misses and size evictions.
            let key = (n * 7919) % 200;
            let _ = cache.get_with(key, || n);
            if n.is_multiple_of(40) {
                // Five requests a second, light next to the example's traffic (its alerts
                // must still fire on its faults): a product (a fifth of them fit the shop's
                // cache), now and then an order.
                let (method, path) = if n.is_multiple_of(200) {
                    ("POST", format!("/orders/{}", 1 + n % 50))
                } else {
                    ("GET", format!("/products/{}", 1 + (n * 31) % 400))
                };
                // Only the load matters here, not the answer.
                let _ = sonde_tests::http::raw_request(
                    shop_addr,
                    method,
                    &path,
                    Duration::from_secs(5),
                );
            }
            handle.spawn(async move {
                let mut x = n;
                for _ in 0..2_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                std::hint::black_box(x)
            });
        });
        AsyncParts {
            traffic,
            runtime: Some(runtime),
            _db: db,
        }
    }
}

impl Drop for AsyncParts {
    fn drop(&mut self) {
        // The traffic spawns onto the runtime: stop it first.
        let _ = self.traffic.stop();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A label with unbounded values (a user id) on a family limited to 5 series: once started,
/// every new value goes to the overflow series and counts in `sonde.series.overflow`.
struct Explosion {
    _lookups: Ticker,
}

impl Explosion {
    fn start(reg: &Registry) -> Explosion {
        let family = reg
            .counter("example.user_lookups")
            .description("Lookups by user: a label with unbounded values, a cardinality bug.")
            .labels(["user.id"])
            .max_series(5)
            .build()
            .unwrap();
        let lookups = Ticker::start(Duration::from_millis(20), move |n| {
            family.with(&[&format!("user-{n}")]).inc();
        });
        Explosion { _lookups: lookups }
    }
}

/// sonde-agent's StatsD server on the service's registry (as the agent runs it), fed by a UDP
/// client: two well-formed lines every 50 ms; while faulty, each packet also carries a malformed
/// line and a metric name never seen before (beyond the server's [`STATSD_MAX_METRICS`], so
/// dropped).
struct Statsd {
    // Declared first, so that the client stops before the server.
    _client: Ticker,
    _server: sonde_statsd::StatsdServer,
    faulty: Arc<AtomicBool>,
}

/// The StatsD server's limit on distinct names: the two names of the healthy traffic fit.
const STATSD_MAX_METRICS: usize = 3;

impl Statsd {
    fn start(reg: &Registry) -> Statsd {
        let server = sonde_statsd::StatsdServer::builder()
            .udp("127.0.0.1:0")
            .registry(reg.clone())
            .max_metrics(STATSD_MAX_METRICS)
            .start()
            .unwrap();
        let addr = server.local_addr().unwrap();
        let faulty = Arc::new(AtomicBool::new(false));
        let f = faulty.clone();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = Ticker::start(Duration::from_millis(50), move |n| {
            let mut packet = String::from("example.jobs.done:1|c\nexample.jobs.duration:12|ms");
            if f.load(Ordering::Relaxed) {
                packet.push_str(&format!("\nexample.jobs.broken\nexample.user_{n}.hits:1|c"));
            }
            socket.send_to(packet.as_bytes(), addr).unwrap();
        });
        Statsd {
            _client: client,
            _server: server,
            faulty,
        }
    }

    fn set_faulty(&self, faulty: bool) {
        self.faulty.store(faulty, Ordering::Relaxed);
    }
}

/// Opens `/dev/null` until `share` of this process's soft limit on open files is in use; the
/// files close when dropped. Refuses (with the reason) a limit too high to fill cheaply.
fn hold_file_descriptors(share: f64) -> Result<Vec<std::fs::File>, String> {
    let limits = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .ok_or("no \"Max open files\" in /proc/self/limits")?;
    let soft: usize = soft
        .parse()
        .map_err(|_| format!("the open files limit is {soft}"))?;
    if soft > 100_000 {
        return Err(format!("the open files limit is {soft}: too many to open"));
    }
    let open = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| e.to_string())?
        .count();
    let want = ((soft as f64 * share).ceil() as usize).saturating_sub(open);
    (0..want)
        .map(|_| std::fs::File::open("/dev/null").map_err(|e| e.to_string()))
        .collect()
}

/// Checks that the example added every boundary the generated objectives' rules read
/// (`le="0.3"` of a latency-as-a-ratio objective) to the histogram they read, from its
/// objectives file (`Objectives::install_boundaries`, before the workload registered it): a
/// service must have those boundaries, else that objective counts no request as fast.
fn assert_objective_buckets(reg: &Registry) {
    let family = "http_server_request_duration_seconds_bucket";
    let mut boundaries = Vec::new();
    for r in rule_files()
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("objectives."))
        })
        .flat_map(|f| load_rules(f))
    {
        for sel in selectors(&r.expr) {
            for m in sel
                .matchers
                .iter()
                .filter(|m| m.label == "le" && m.op == "=")
            {
                assert_eq!(
                    sel.name,
                    family,
                    "{}: an objective reads a bucket of another histogram; check it here too",
                    r.name()
                );
                boundaries.push(m.value.parse::<f64>().unwrap());
            }
        }
    }
    assert!(
        !boundaries.is_empty(),
        "no objective reads a bucket boundary"
    );
    let snapshot = reg.snapshot();
    let served: Vec<f64> = snapshot
        .family("http.server.request.duration")
        .and_then(|f| f.series.first())
        .and_then(|s| s.point.histogram())
        .map(|h| h.cumulative_buckets().into_iter().map(|(b, _)| b).collect())
        .unwrap_or_default();
    for b in boundaries {
        assert!(
            served.contains(&b),
            "le={b} read by the objectives' rules is not a boundary of http.server.request.duration: {served:?}"
        );
    }
}

/// The `/report` verdict of objective `name` (and the objective's whole entry).
fn verdict(target: SocketAddr, name: &str) -> (String, Value) {
    let reply = sonde_tests::http::get(&format!("http://{target}/report"), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let o = body["objectives"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no objective {name} in /report: {}", body["objectives"]));
    (o["verdict"].as_str().unwrap_or_default().to_owned(), o)
}

/// Waits until `/report` judges `name` `want`; returns how long it took.
fn wait_for_verdict(target: SocketAddr, name: &str, want: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (now, o) = verdict(target, name);
        if now == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?}, /report judges {name} {now}, not {want}: {o}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn dashboards_and_alerts_work_on_live_data_and_alerts_fire_on_faults() {
    let started = Instant::now();
    let reg = Registry::new();
    // As sonde-example-service does at start: the example's objectives add their thresholds
    // as bucket boundaries before the workload registers its histograms, and are judged on
    // /report.
    let objectives = sonde_example::load_objectives(None).unwrap();
    objectives.install_boundaries(&reg).unwrap();
    let workload = sonde_example::Workload::start(
        &reg,
        sonde_example::Options {
            cold_start: Duration::from_millis(20),
            // 1% of payment calls fail (0.15% of requests): well below every threshold.
            api_error_rate: BASELINE_API_ERRORS,
            ..Default::default()
        },
    )
    .unwrap();
    let fleet = Fleet::start(&reg);
    let statsd = Statsd::start(&reg);
    let async_parts = AsyncParts::start(&reg);
    // A push exporter, so that sonde's exporter self-metrics exist: OTLP to a receiver that
    // accepts everything (until the outage below).
    let receiver = OtlpReceiver::start();
    let otlp = OtlpMetricsBuilder::new()
        .registry(reg.clone())
        .environment(|_| None)
        .transport(
            OtlpTransport::new()
                .endpoint(receiver.http_endpoint())
                .protocol(Protocol::HttpProtobuf),
        )
        .resource(Resource::empty().with("service.name", "example"))
        .interval(Duration::from_millis(500))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .max_retry_time(Duration::from_secs(1))
        .install()
        .unwrap();
    let server = sonde_tests::loopback_exporter(&reg)
        .resource(Resource::empty().with("service.name", "example"))
        .judge(objectives.judge())
        // One short window (the rules' windows are shortened too): every objective is judged
        // over the last REPORT_WINDOW, so a verdict follows a fault within seconds.
        .report_windows([REPORT_WINDOW])
        .report_resolution(Duration::from_millis(500))
        .install()
        .unwrap();
    let target = server.local_addr();
    let instance = target.to_string();

    let (prom, rule_paths, _rules_dir) = start_with_shortened_rules(target, JOB, false);
    // Enough history for the shortened windows and $__rate_interval.
    prom.wait_for_series(
        &format!("job_instance:http_server_requests:rate5m{{job=\"{JOB}\"}} > 0"),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_objective_buckets(&reg);

    // Every rule evaluates.
    let errors = rule_errors(&prom);
    assert!(errors.is_empty(), "rules failing: {errors:#?}");

    // Every dashboard query, recording rule and alert operand has data.
    let vars = dashboard_vars(JOB, &instance);
    let dashboards: Vec<Dashboard> = Dashboard::load_all()
        .into_iter()
        .filter(|d| d.uid() != HOST_DASHBOARD)
        .collect();
    // Service overview, dependencies, runtime, self-health, and the generated SLO dashboard.
    assert_eq!(dashboards.len(), 5);
    assert!(dashboards.iter().any(|d| d.uid() == "sonde-slo"));
    assert!(
        rule_paths
            .iter()
            .any(|p| p.ends_with("objectives.alerts.yml")),
        "the generated alerts are loaded: {rule_paths:?}"
    );
    let rules = load_rule_files(&rule_paths);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut findings = Findings {
        absent: absent_optional(&prom, JOB, &rules),
        ..Findings::default()
    };
    evaluate_dashboards(&prom, &dashboards, &vars, deadline, &mut findings);
    evaluate_rules(&prom, &rules, JOB, deadline, &mut findings);
    report("dashboards and rules on live data", &findings);
    assert!(findings.evaluated > 150, "{} queries", findings.evaluated);
    // The second example feeds the same panels: its pool, cache, outgoing calls and runtime.
    for expr in [
        "db_client_connection_max{db_client_connection_pool_name=\"shop\"}",
        "cache_requests_total{cache_name=\"products\"}",
        "http_client_request_duration_seconds_count{url_template=\"/payments/{order}\"}",
        "http_server_request_duration_seconds_count{http_route=\"/products/{id}\"}",
        "tokio_runtime_workers",
    ] {
        assert_eq!(has_series_by(&prom, expr, deadline), Ok(true), "{expr}");
    }
    eprintln!(
        "{} queries returned data after {:?}; waiting for faults: {:?}",
        findings.evaluated,
        started.elapsed(),
        findings.pending
    );
    if !findings.skipped.is_empty() {
        eprintln!(
            "not exposed here ({:?}: no cgroup memory limit?), so only evaluated: {:#?}",
            findings.absent, findings.skipped
        );
    }

    // The service is healthy: none of the alerts the faults should raise fires yet.
    let mut phase1 = vec![
        "SloErrorsBudgetBurnFast",
        "ExternalApiErrorRatioHigh",
        "SloAvailabilityBudgetBurnFast",
        "ColdStartP95High",
        "SondeExporterFailing",
        "SondeExporterDroppingPoints",
        "SondeSeriesOverflow",
        "SondeStatsdParseErrorsHigh",
        "SondeStatsdDropping",
    ];
    let latency = ["DbLatencyP95High", "ApiLatencyP95High"];
    let healthy = firing(&prom, JOB);
    let quiet = [
        "TargetDown",
        "ApiLatencyP99High",
        "ExternalApiLatencyP95High",
        "ProcessMemoryHigh",
        "ProcessFileDescriptorsHigh",
        "SloApiFastRequestsBudgetBurnFast",
        "SloCacheHitsBudgetBurnSlow",
    ];
    for a in phase1.iter().chain(&latency).chain(&quiet) {
        assert!(
            !healthy.contains(*a),
            "{a} fires on a healthy service: {healthy:?}"
        );
    }

    // /report judges the latency objectives met on the healthy service.
    for o in LATENCY_OBJECTIVES {
        wait_for_verdict(target, o, "met", Duration::from_secs(15));
    }

    // 1. Errors from the payments API, slow cold starts, the OTLP receiver down, a label with
    //    unbounded values.
    workload.set_api_error_rate(0.9);
    fleet.set_init(Duration::from_millis(1500));
    receiver.set_default(Fault::Unavailable { retry_after: None });
    let explosion = Explosion::start(&reg);
    statsd.set_faulty(true);
    let held = match hold_file_descriptors(0.92) {
        Ok(files) => {
            phase1.push("ProcessFileDescriptorsHigh");
            files
        }
        Err(why) => {
            eprintln!("ProcessFileDescriptorsHigh not injected: {why}");
            Vec::new()
        }
    };
    let took = wait_for_alerts(&prom, JOB, &phase1, Duration::from_secs(60));
    eprintln!("error burst etc.: {phase1:?} firing after {took:?}");
    // /report: the errors of /orders burn its budget far faster than the page rate.
    let took = wait_for_verdict(target, "errors", "violated", Duration::from_secs(15));
    let (_, errors) = verdict(target, "errors");
    let orders = errors["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["labels"]["http.route"] == "/orders"))
        .cloned()
        .unwrap_or_else(|| panic!("no /orders group: {errors}"));
    assert_eq!(orders["verdict"], "violated", "{errors}");
    assert!(
        orders["burn_rate"].as_f64().unwrap() > errors["violation_burn_rate"].as_f64().unwrap(),
        "{errors}"
    );
    eprintln!("/report: errors violated after {took:?}: {orders}");
    let now = firing(&prom, JOB);
    for a in latency.iter().chain(&["SloApiFastRequestsBudgetBurnFast"]) {
        assert!(
            !now.contains(*a),
            "{a} fires during an error burst that made nothing slower: {now:?}"
        );
    }

    // 2. The API recovers; the database slows down.
    workload.set_api_error_rate(BASELINE_API_ERRORS);
    fleet.set_init(Duration::from_millis(250));
    receiver.set_default(Fault::Ok);
    drop(explosion);
    statsd.set_faulty(false);
    drop(held);
    workload.set_db_delay(Duration::from_millis(600));
    // And the payments API slows down past its 1 s threshold, so checkouts (1.2 s + 0.6 s)
    // pass the 1.5 s p99 objective.
    workload.set_api_delay(Duration::from_millis(1200));
    let phase2: Vec<&str> = latency
        .iter()
        .copied()
        .chain(["ExternalApiLatencyP95High", "ApiLatencyP99High"])
        .collect();
    let took = wait_for_alerts(&prom, JOB, &phase2, Duration::from_secs(60));
    eprintln!("slow database and API: {phase2:?} firing after {took:?}");

    // The operands that only exist after a fault now have data.
    let mut after = Findings::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    for (name, expr) in &findings.pending {
        after.evaluated += 1;
        match has_series_by(&prom, expr, deadline) {
            Ok(true) => {}
            Ok(false) => after
                .failures
                .push(format!("{name}: no data even after the faults\n    {expr}")),
            Err(e) => after.failures.push(format!("{name}: {e}\n    {expr}")),
        }
    }
    report("alert operands after the faults", &after);

    // /report judges the latency objectives violated during the slowdown, and met again once
    // the database and the API are fast (fast requests soon outnumber the slow ones in the
    // window, which then forgets them).
    for o in LATENCY_OBJECTIVES {
        wait_for_verdict(target, o, "violated", Duration::from_secs(15));
    }
    workload.set_db_delay(Duration::ZERO);
    workload.set_api_delay(Duration::ZERO);
    for o in LATENCY_OBJECTIVES {
        let took = wait_for_verdict(target, o, "met", Duration::from_secs(20));
        eprintln!("/report: {o} met again {took:?} after the slowdown ended");
    }

    // 3. The service stops serving metrics.
    server.shutdown(std::time::Duration::from_secs(10)).unwrap();
    let took = wait_for_alerts(&prom, JOB, &["TargetDown"], Duration::from_secs(30));
    eprintln!("target gone: TargetDown firing after {took:?}");

    drop(fleet);
    drop(statsd);
    drop(async_parts);
    workload.stop();
    otlp.shutdown(Duration::from_secs(2)).ok();
    eprintln!("whole test: {:?}", started.elapsed());
}

/// The host dashboard and host rules, over the metrics sonde-agent serves: its host collector
/// (refreshed at every scrape here) and its own process metrics (unlabelled, as the agent has
/// them: procstat has its own procstat.* names).
#[test]
fn host_dashboard_and_alerts_work_on_live_agent_data() {
    let registry = sonde::Registry::new();
    let _host = sonde_host::HostCollector::new()
        .registry(&registry)
        .on_collect(true)
        .install()
        .unwrap();
    let _own = sonde::process::ProcessCollector::current()
        .registry(&registry)
        .install()
        .unwrap();
    let server = sonde_tests::loopback_exporter(&registry).install().unwrap();
    let addr: SocketAddr = server.local_addr();
    let job = "sonde-agent";
    let (prom, rule_paths, _rules_dir) = start_with_shortened_rules(addr, job, true);
    std::thread::sleep(Duration::from_secs(12));
    let errors = rule_errors(&prom);
    assert!(errors.is_empty(), "rules failing: {errors:#?}");
    let instance = addr.to_string();
    let vars = dashboard_vars(job, &instance);
    let dashboards: Vec<Dashboard> = Dashboard::load_all()
        .into_iter()
        .filter(|d| d.uid() == HOST_DASHBOARD)
        .collect();
    assert_eq!(dashboards.len(), 1);
    let rules = load_rule_files(&rule_paths);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut findings = Findings::default();
    evaluate_dashboards(&prom, &dashboards, &vars, deadline, &mut findings);
    evaluate_rules(&prom, &rules, job, deadline, &mut findings);
    // No fault to wait for: every host alert's operands must exist on a healthy host.
    for (name, expr) in &findings.pending {
        findings
            .failures
            .push(format!("{name}: no data\n    {expr}"));
    }
    report("host dashboard and rules on live agent data", &findings);
}

/// Whether a query's result is keyed by `http_route` (aggregated `by (..., http_route)`), not
/// merely filtered on it.
fn keyed_by_route(expr: &str) -> bool {
    let by = regex::Regex::new(r"\bby\s*\(([^)]*)\)").unwrap();
    by.captures_iter(expr)
        .any(|c| c[1].split(',').any(|l| l.trim() == "http_route"))
}

/// The axum example, instrumented by `HttpServerLayer::new(metrics)` alone, under traffic with a
/// new raw path on every request, scraped by a real Prometheus: every dashboard query keyed by
/// `http_route` returns its route templates, and no raw path.
#[test]
fn route_panels_show_the_axum_example_route_templates() {
    let reg = Registry::new();
    let http = sonde::instrument::HttpServerMetrics::install(&reg).unwrap();
    let (rt, listener, app) = sonde_tests::serve::loopback_runtime(2);
    rt.spawn(async move { axum::serve(listener, sonde_example_axum::app(http)).await });
    let server = sonde_tests::loopback_exporter(&reg).install().unwrap();

    // Traffic on every route, each request to a path never seen before where the route has a
    // parameter (or no route at all).
    let base = format!("http://{app}");
    let mut traffic = Ticker::start(Duration::from_millis(20), move |n| {
        use sonde_tests::http::{get, post};
        assert_eq!(get(&format!("{base}/users/{n}"), &[]).status, 200);
        assert_eq!(get(&format!("{base}/orders"), &[]).status, 200);
        assert_eq!(post(&format!("{base}/orders"), b"{}").status, 201);
        post(&format!("{base}/checkout"), b"{}");
        assert_eq!(get(&format!("{base}/health"), &[]).status, 200);
        assert_eq!(get(&format!("{base}/no/such/page/{n}"), &[]).status, 404);
        if n.is_multiple_of(4) {
            assert_eq!(get(&format!("{base}/report"), &[]).status, 200);
        }
    });

    let job = "axum-example";
    let target = server.local_addr();
    let prom = start_prometheus(target, job, &[]);
    prom.wait_for_series(
        &format!(
            "sum(rate(http_server_request_duration_seconds_count{{job=\"{job}\"}}[{RATE_INTERVAL}])) > 0"
        ),
        Duration::from_secs(30),
    );
    // A few more scrapes, so that every route (the slow one too) has a rate.
    std::thread::sleep(Duration::from_secs(3));

    let instance = target.to_string();
    let vars = dashboard_vars(job, &instance);
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for d in Dashboard::load_all() {
        for q in d.queries().into_iter().filter(|q| keyed_by_route(&q.expr)) {
            evaluated += 1;
            let expr = substitute(&q.expr, &vars);
            let what = format!("{} / {} / {}", d.file_name(), q.panel, q.ref_id);
            let routes: BTreeSet<String> = prom
                .query(&expr)
                .into_iter()
                .filter_map(|s| s.labels.get("http_route").cloned())
                .collect();
            let raw: Vec<&String> = routes
                .iter()
                .filter(|r| !AXUM_ROUTES.contains(&r.as_str()))
                .collect();
            let missing: Vec<&str> = AXUM_ROUTES[1..]
                .iter()
                .copied()
                .filter(|r| !routes.contains(*r))
                .collect();
            if !raw.is_empty() || !missing.is_empty() {
                failures.push(format!(
                    "{what}: routes {routes:?} (not templates: {raw:?}; missing: {missing:?})\n    {expr}"
                ));
            }
        }
    }
    traffic.stop().unwrap();
    assert!(evaluated >= 5, "only {evaluated} route-keyed queries found");
    assert!(
        failures.is_empty(),
        "{} of {evaluated} route-keyed queries:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{evaluated} route-keyed queries show the axum example's route templates");
}
