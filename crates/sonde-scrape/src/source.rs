//! Mirrors scraped targets into a registry, so every exporter forwards what they expose.
//!
//! Each target is scraped on its own thread every `interval`. Its series get `job` (the
//! target's name) and `instance` (host:port of its URL) labels, as Prometheus adds them; a
//! scraped `job` or `instance` label is kept as `exported_job` / `exported_instance`.
//!
//! - counters (`_total`) mirror the target's totals: each scrape adds the change; a total that
//!   went down (the target restarted) starts the series over, as a new series;
//! - gauges and untyped samples are set;
//! - histograms keep the target's bucket bounds as their explicit buckets: bucket counts,
//!   count and sum are exact (the quantile grid sees each bucket's count at its upper bound);
//! - summaries: their quantiles, as a gauge with a `quantile` label (`_sum` and `_count` are
//!   left out);
//! - a series that is gone from the target is removed at once (Prometheus' staleness), and all
//!   of a target's series when a scrape fails;
//! - per target, like Prometheus: `up` (1 or 0), `scrape_duration_seconds`,
//!   `scrape_samples_scraped`; families and series that cannot be mirrored (a name taken by
//!   another source, label names that changed, non-finite gauges, new histogram bounds) are
//!   counted in `sonde.scrape.refused{job,reason}` and logged once a minute;
//! - bounded, whatever a target exposes: a scrape of more samples than the target's
//!   `sample_limit` fails as a whole, as in Prometheus (`up` 0, reason `sample_limit`); a new
//!   name is not registered while the registry's memory budget is full (reason `budget`, tried
//!   again at the next scrape); and a name gone from the target gives its family back to the
//!   registry once no target fills it, so a target whose names change at every scrape holds
//!   only what its latest scrape exposed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sonde_core::{Counter, Family, Gauge, Histogram, Instrument, Registry, Unit};

use crate::fetch::{Auth, FetchError, check_login, check_url};
use crate::text::{Exposition, Kind, Labels, Series};

/// One target to scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The `job` label of its series.
    pub job: String,
    /// Its metrics URL.
    pub url: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Time limit of one scrape.
    pub timeout: Duration,
    /// Credentials.
    pub auth: Auth,
    /// Largest body read.
    pub max_body: u64,
    /// How an https target is trusted.
    pub tls: crate::fetch::Tls,
    /// The labels kept from the target's `target_info` (default
    /// [`sonde_core::TARGET_INFO_ATTRIBUTES`]): give every source of a registry the same list,
    /// so they share one `target_info` family.
    pub target_info_attributes: Vec<String>,
    /// Whether the protobuf format is asked for first (default true; the only format with
    /// native histograms), else OpenMetrics or text.
    pub protobuf: bool,
    /// The most samples one scrape may expose (as Prometheus counts them: every sample line, a
    /// bucket, `_sum` and `_count` each); a scrape with more fails as a whole and mirrors
    /// nothing, like Prometheus's `sample_limit`. Reading stops at the limit, so a body of
    /// millions of tiny samples costs no more than the limit. Default [`DEFAULT_SAMPLE_LIMIT`].
    pub sample_limit: usize,
}

/// The default [`Target::sample_limit`]: well above what node_exporter or a database
/// exporter exposes, well below what would fill the agent's default memory budget.
pub const DEFAULT_SAMPLE_LIMIT: usize = 50_000;

impl Target {
    /// A target named `job` at `url`: every 15 s, 10 s timeout, no credentials, 64 MiB bodies,
    /// at most [`DEFAULT_SAMPLE_LIMIT`] samples.
    pub fn new(job: impl Into<String>, url: impl Into<String>) -> Target {
        Target {
            job: job.into(),
            url: url.into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            auth: Auth::None,
            max_body: crate::MAX_BODY_BYTES,
            tls: crate::fetch::Tls::default(),
            target_info_attributes: sonde_core::TARGET_INFO_ATTRIBUTES
                .iter()
                .map(|a| (*a).to_owned())
                .collect(),
            protobuf: true,
            sample_limit: DEFAULT_SAMPLE_LIMIT,
        }
    }

    /// `host:port` of the URL, the `instance` label.
    pub fn instance(&self) -> String {
        self.url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                let host = u.host()?.to_owned();
                let port = u.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
                Some(format!("{host}:{port}"))
            })
            .unwrap_or_else(|| self.url.clone())
    }
}

/// What one scrape did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeStats {
    /// Whether the target answered with an exposition.
    pub up: bool,
    /// Samples read.
    pub samples: usize,
    /// Series mirrored.
    pub series: usize,
    /// Families or series refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Why the scrape failed, if it did.
    pub error: Option<String>,
}

/// Scrapes targets on their own threads into a registry; stops, and removes what it mirrored,
/// on [`uninstall`](Self::uninstall) or drop ([`Component::shutdown`](sonde_core::Component::shutdown)
/// stops and keeps it).
#[must_use = "dropping the source stops scraping and removes what it mirrored: keep it (`let _scrape = ...`) for as long as the targets should be scraped"]
pub struct ScrapeSource {
    stop: Arc<AtomicBool>,
    /// Whether stopping leaves the mirrored series in place.
    keep: Arc<AtomicBool>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ScrapeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeSource")
            .field("targets", &self.threads().len())
            .finish()
    }
}

impl ScrapeSource {
    /// Checks the targets and starts scraping each (the first scrape at once).
    pub fn start(registry: &Registry, targets: Vec<Target>) -> Result<ScrapeSource, FetchError> {
        for t in &targets {
            check_url(&t.url)?;
            check_login(&t.url, &t.auth)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let keep = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for target in targets {
            let mut mirror = Mirror::new(registry, &target);
            let (stop, keep) = (stop.clone(), keep.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("scrape-{}", target.job))
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        if Instant::now() >= next {
                            next = Instant::now() + target.interval;
                            mirror.scrape(&target);
                        }
                        std::thread::sleep(
                            next.saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(50)),
                        );
                    }
                    if !keep.load(Ordering::Acquire) {
                        mirror.clear();
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    return Err(FetchError {
                        message: format!("cannot start a scrape thread: {e}"),
                        reason: "thread",
                    });
                }
            }
        }
        Ok(ScrapeSource {
            stop,
            keep,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// Scrapes `target` once into `registry` now, on this thread, and leaves its series there
    /// (for a cost estimate or a check).
    pub fn scrape_once(registry: &Registry, target: &Target) -> ScrapeStats {
        Mirror::new(registry, target).scrape(target)
    }

    /// Stops scraping and removes every series it mirrored (their exporters see them end);
    /// also done on drop. [`Component::shutdown`](sonde_core::Component::shutdown) stops and
    /// keeps them (for a process about to export its last interval and exit).
    pub fn uninstall(&self) {
        self.stop_threads();
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_threads(&self) {
        self.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A scrape records each answer as it arrives: `flush` has nothing to do; `shutdown` stops
/// the targets' threads and leaves the mirrored series as they are.
impl sonde_core::Component for ScrapeSource {
    fn name(&self) -> &'static str {
        "scrape"
    }

    fn shutdown(&self, _timeout: std::time::Duration) -> Result<(), sonde_core::ComponentError> {
        self.keep.store(true, Ordering::Release);
        self.stop_threads();
        Ok(())
    }
}

impl Drop for ScrapeSource {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// One target mirrored into a registry on the caller's thread: what a [`ScrapeSource`] thread
/// runs, for callers with their own schedule (and benchmarks of the steady state).
pub struct Scraper {
    mirror: Mirror,
    target: Target,
}

impl Scraper {
    /// A scraper of `target` into `registry` (nothing is read until [`scrape`](Self::scrape)).
    pub fn new(registry: &Registry, target: Target) -> Scraper {
        Scraper {
            mirror: Mirror::new(registry, &target),
            target,
        }
    }

    /// Scrapes once and mirrors the result; series that went away are removed.
    pub fn scrape(&mut self) -> ScrapeStats {
        self.mirror.scrape(&self.target)
    }
}

/// The mirror of one target: its families in the registry and what was last read.
pub(crate) struct Mirror {
    registry: Registry,
    job: String,
    instance: String,
    families: HashMap<String, Mirrored>,
    up: Option<Gauge<f64>>,
    duration: Option<Gauge<f64>>,
    samples: Option<Gauge<f64>>,
    refused: Option<Family<Counter>>,
    user_agent: String,
    /// One warning a minute at most per target.
    log: sonde_core::diag::RateLimit,
    /// Counts scrapes that applied, to tell the series the latest one saw.
    generation: u64,
    /// The target's `target_info_attributes`.
    info_attributes: Vec<String>,
}

/// A family as mirrored: its registry family, its label names (the target's, then `job` and
/// `instance`), and the last value read of each series.
struct Mirrored {
    labels: Vec<String>,
    store: Store,
    /// A `target_info` family: fixed labels (`job`, `instance`, then the target's
    /// `target_info_attributes`), as every source of the agent registers it, so targets and
    /// OTLP senders share it; a target's other labels are not kept.
    info: bool,
}

/// Per-series state by the target's labels: the handle, what was last read, and the scrape
/// that last saw it (series the latest scrape did not see are removed).
type BySeries<V> = HashMap<Labels, (V, u64), foldhash::fast::RandomState>;

/// A native series' handle, last cumulative `(value, count)` pairs and sum.
type NativeState = (Histogram, Vec<(f64, u64)>, f64);

enum Store {
    Counter(Family<Counter<f64>>, BySeries<(Counter<f64>, f64)>),
    Gauge(Family<Gauge<f64>>, BySeries<Gauge<f64>>),
    Histogram(
        Family<Histogram>,
        Vec<f64>,
        BySeries<(Histogram, Vec<u64>, f64)>,
    ),
    /// Native histograms without classic buckets, onto sonde's grid: per series the handle,
    /// the last cumulative `(value, count)` pairs and sum.
    Native(Family<Histogram>, BySeries<NativeState>),
    /// A name that cannot be mirrored: refused once, not retried every scrape.
    Refused,
}

/// What a new family is taken to cost when the budget is asked (its tables and definition).
const NEW_FAMILY_BYTES: usize = 1024;

impl Store {
    /// Whether its family is still the registry's (true for a refused name).
    fn is_registered(&self, registry: &Registry) -> bool {
        match self {
            Store::Counter(f, _) => registry.is_registered(f),
            Store::Gauge(f, _) => registry.is_registered(f),
            Store::Histogram(f, _, _) | Store::Native(f, _) => registry.is_registered(f),
            Store::Refused => true,
        }
    }

    /// Gives its family back to the registry if no series is left in it (another target of
    /// the same exporter may still fill it).
    fn remove_if_unused(&self, registry: &Registry) {
        match self {
            Store::Counter(f, _) => registry.remove_family_if_unused(f),
            Store::Gauge(f, _) => registry.remove_family_if_unused(f),
            Store::Histogram(f, _, _) | Store::Native(f, _) => registry.remove_family_if_unused(f),
            Store::Refused => false,
        };
    }
}

impl Mirror {
    pub(crate) fn new(registry: &Registry, target: &Target) -> Mirror {
        let job = target.job.clone();
        let instance = target.instance();
        let ids = [job.as_str(), instance.as_str()];
        let gauge = |name: &'static str, unit: Unit, help: &'static str| {
            registry
                .gauge_f64(name)
                .description(help)
                .unit(unit)
                .labels(["job", "instance"])
                .build()
                .ok()
                .map(|f| f.with(&ids))
        };
        Mirror {
            registry: registry.clone(),
            up: gauge(
                "up",
                Unit::None,
                "1 if the last scrape of the target succeeded, else 0.",
            ),
            duration: gauge(
                "scrape_duration",
                Unit::Seconds,
                "How long the last scrape of the target took.",
            ),
            samples: gauge(
                "scrape_samples_scraped",
                Unit::None,
                "Samples the last scrape of the target exposed.",
            ),
            refused: registry
                .counter("sonde.scrape.refused")
                .description("Scraped families or series that could not be mirrored, by reason.")
                .labels(["job", "reason"])
                .build()
                .ok(),
            job,
            instance,
            families: HashMap::new(),
            user_agent: concat!("sonde-scrape/", env!("CARGO_PKG_VERSION")).to_owned(),
            log: sonde_core::diag::RateLimit::new(Duration::from_secs(60)),
            generation: 0,
            info_attributes: target.target_info_attributes.clone(),
        }
    }

    /// Scrapes once and mirrors the result.
    pub(crate) fn scrape(&mut self, target: &Target) -> ScrapeStats {
        let start = Instant::now();
        let mut stats = ScrapeStats::default();
        let fetched = crate::fetch::Request::new(&target.url, target.timeout, &self.user_agent)
            .auth(&target.auth)
            .tls(&target.tls)
            .max_body(target.max_body)
            .max_samples(target.sample_limit)
            .exposition(target.protobuf)
            .map_err(|e| {
                if e.reason == "sample_limit" {
                    *stats.refused.entry("sample_limit").or_default() += 1;
                    format!(
                        "{}: nothing of this scrape is mirrored (raise the target's sample_limit if they are all wanted)",
                        e.message
                    )
                } else {
                    e.message
                }
            });
        self.record(fetched, &target.url, start, stats)
    }

    /// Mirrors what a scrape of `url` begun at `start` read, or marks everything stale if it
    /// failed, and sets the target's `up`, duration, sample and refusal series.
    fn record(
        &mut self,
        fetched: Result<Exposition, String>,
        url: &str,
        start: Instant,
        mut stats: ScrapeStats,
    ) -> ScrapeStats {
        match fetched {
            Ok(exposition) => {
                stats.up = true;
                self.apply(&exposition, &mut stats);
            }
            Err(e) => {
                self.warn(format_args!(
                    "scraping {} failed: {e}",
                    sonde_push::redact_url(url)
                ));
                stats.error = Some(e);
                // Prometheus marks every series of a failed target stale.
                self.clear();
            }
        }
        if let Some(g) = &self.up {
            g.set(if stats.up { 1.0 } else { 0.0 });
        }
        if let Some(g) = &self.duration {
            g.set(start.elapsed().as_secs_f64());
        }
        if let Some(g) = &self.samples {
            g.set(stats.samples as f64);
        }
        for (reason, n) in &stats.refused {
            if let Some(f) = &self.refused {
                f.with(&[self.job.as_str(), reason]).add(*n);
            }
        }
        stats
    }

    fn warn(&self, args: std::fmt::Arguments<'_>) {
        if let Some(n) = self.log.hit() {
            let more = if n > 1 {
                format!(" ({} such reports held back this minute)", n - 1)
            } else {
                String::new()
            };
            sonde_core::diag::warn(format_args!("{args}{more}"));
        }
    }

    /// Removes every mirrored series, and the families no other target fills.
    pub(crate) fn clear(&mut self) {
        for (_, mut m) in self.families.drain() {
            m.remove_all(&self.job, &self.instance);
            m.give_back(&self.registry);
        }
    }

    fn apply(&mut self, e: &Exposition, stats: &mut ScrapeStats) {
        let mut refused: BTreeMap<&'static str, u64> = BTreeMap::new();
        if e.skipped_count > 0 {
            // Lines (or protobuf messages) that did not parse: counted, the first shown.
            *refused.entry("bad_line").or_default() += e.skipped_count as u64;
            self.warn(format_args!(
                "{} part(s) of {}'s exposition did not parse, such as {:?}",
                e.skipped_count,
                self.job,
                e.skipped.first()
            ));
        }
        let (job, instance) = (self.job.clone(), self.instance.clone());
        self.generation += 1;
        let generation = self.generation;
        for (name, family) in &e.families {
            // A family another target gave back (it had no series left) is registered again.
            if self
                .families
                .get(name)
                .is_some_and(|m| !m.store.is_registered(&self.registry))
            {
                self.families.remove(name);
            }
            if !self.families.contains_key(name) {
                // A new name takes memory: not while the budget is full (tried again next time).
                if self.registry.over_budget(NEW_FAMILY_BYTES) {
                    *refused.entry("budget").or_default() += 1;
                    continue;
                }
                let family_labels = target_label_names(family.series.keys());
                let m = self.register(name, family, &family_labels, &mut refused);
                self.families.insert(name.clone(), m);
            }
            let Some(m) = self.families.get_mut(name) else {
                continue;
            };
            let info = m.info;
            let values = |labels: &Labels| {
                if info {
                    info_values(labels, &m.labels[2..], &job, &instance)
                } else {
                    label_values(labels, &m.labels, &job, &instance)
                }
            };
            let fits = |labels: &Labels| {
                info || labels
                    .iter()
                    .all(|(k, _)| m.labels.iter().any(|l| l == renamed(k)))
            };
            match &mut m.store {
                Store::Refused => {}
                Store::Counter(f, series) => {
                    for (labels, s) in &family.series {
                        stats.samples += 1;
                        let Some(v) = s.value.filter(|v| v.is_finite() && *v >= 0.0) else {
                            *refused.entry("bad_value").or_default() += 1;
                            continue;
                        };
                        if !fits(labels) {
                            *refused.entry("new_label").or_default() += 1;
                            continue;
                        }
                        match series.get_mut(labels) {
                            Some(((c, prev), seen)) if v >= *prev => {
                                c.add(v - *prev);
                                *prev = v;
                                *seen = generation;
                            }
                            Some((entry, seen)) => {
                                // The target restarted: a new series from its new total.
                                let vals = values(labels);
                                f.remove(&vals);
                                let c = f.with(&vals);
                                c.add(v);
                                *entry = (c, v);
                                *seen = generation;
                            }
                            None => {
                                let c = f.with(&values(labels));
                                c.add(v);
                                series.insert(labels.clone(), ((c, v), generation));
                            }
                        }
                        stats.series += 1;
                    }
                    remove_unseen(f, series, generation, values);
                }
                Store::Gauge(f, series) => {
                    for (labels, s) in &family.series {
                        let points: Vec<(Labels, f64)> = if family.kind == Kind::Summary {
                            quantile_points(labels, s)
                        } else if info {
                            // Keyed by what is kept, so two series that differ only in
                            // labels left out are one series here, not two keys of one.
                            s.value
                                .map(|v| (info_key(labels, &m.labels[2..]), v))
                                .into_iter()
                                .collect()
                        } else {
                            s.value.map(|v| (labels.clone(), v)).into_iter().collect()
                        };
                        for (labels, v) in points {
                            stats.samples += 1;
                            if !v.is_finite() {
                                *refused.entry("bad_value").or_default() += 1;
                                continue;
                            }
                            if !fits(&labels) {
                                *refused.entry("new_label").or_default() += 1;
                                continue;
                            }
                            match series.get_mut(&labels) {
                                Some((g, seen)) => {
                                    g.set(v);
                                    *seen = generation;
                                }
                                None => {
                                    let g = f.with(&values(&labels));
                                    g.set(v);
                                    series.insert(labels, (g, generation));
                                }
                            }
                            stats.series += 1;
                        }
                    }
                    remove_unseen(f, series, generation, values);
                }
                Store::Histogram(f, bounds, series) => {
                    let reps = sonde_core::histogram::bucket_values(bounds);
                    let mut batch: Vec<(f64, u64)> = Vec::with_capacity(reps.len());
                    let mut record =
                        |h: &Histogram, counts: &mut dyn Iterator<Item = u64>, sum: f64| {
                            batch.clear();
                            batch.extend(reps.iter().copied().zip(counts));
                            h.record_counts(&batch, sum);
                        };
                    for (labels, s) in &family.series {
                        stats.samples += s.buckets.len() + 2;
                        let Some(counts) = bucket_counts(s, bounds) else {
                            *refused.entry("bounds_changed").or_default() += 1;
                            continue;
                        };
                        if !fits(labels) {
                            *refused.entry("new_label").or_default() += 1;
                            continue;
                        }
                        let sum = s.sum.unwrap_or(0.0);
                        match series.get_mut(labels) {
                            Some(((h, prev, prev_sum), seen))
                                if counts.iter().zip(prev.iter()).all(|(n, p)| n >= p) =>
                            {
                                let mut delta = counts.iter().zip(prev.iter()).map(|(n, p)| n - p);
                                record(h, &mut delta, sum - *prev_sum);
                                *prev = counts;
                                *prev_sum = sum;
                                *seen = generation;
                            }
                            Some((entry, seen)) => {
                                let vals = values(labels);
                                f.remove(&vals);
                                let h = f.with(&vals);
                                record(&h, &mut counts.iter().copied(), sum);
                                *entry = (h, counts, sum);
                                *seen = generation;
                            }
                            None => {
                                let h = f.with(&values(labels));
                                record(&h, &mut counts.iter().copied(), sum);
                                series.insert(labels.clone(), ((h, counts, sum), generation));
                            }
                        }
                        stats.series += 1;
                    }
                    remove_unseen(f, series, generation, values);
                }
                Store::Native(f, series) => {
                    for (labels, s) in &family.series {
                        stats.samples += 1;
                        let Some(counts) = s.native.as_ref().and_then(|n| n.values()) else {
                            *refused.entry("bad_value").or_default() += 1;
                            continue;
                        };
                        if !fits(labels) {
                            *refused.entry("new_label").or_default() += 1;
                            continue;
                        }
                        let sum = s.sum.filter(|v| v.is_finite()).unwrap_or(0.0);
                        match series.get_mut(labels) {
                            Some(((h, prev, prev_sum), seen)) => {
                                // A lower schema than last time (client_golang's bucket
                                // limit) nests the old buckets in the new: not a restart.
                                let schema = s.native.as_ref().map_or(0, |n| n.schema);
                                match sonde_core::histogram::counts_since_at_scale(
                                    &counts, prev, schema,
                                ) {
                                    Some(delta) => h.record_counts(&delta, sum - *prev_sum),
                                    None => {
                                        // The target restarted: a new series from its counts.
                                        let vals = values(labels);
                                        f.remove(&vals);
                                        *h = f.with(&vals);
                                        h.record_counts(&counts, sum);
                                    }
                                }
                                *prev = counts;
                                *prev_sum = sum;
                                *seen = generation;
                            }
                            None => {
                                let h = f.with(&values(labels));
                                h.record_counts(&counts, sum);
                                series.insert(labels.clone(), ((h, counts, sum), generation));
                            }
                        }
                        stats.series += 1;
                    }
                    remove_unseen(f, series, generation, values);
                }
            }
        }
        // Families gone from the exposition lose their series.
        let gone: Vec<String> = self
            .families
            .keys()
            .filter(|k| !e.families.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut m) = self.families.remove(&name) {
                m.remove_all(&self.job, &self.instance);
                m.give_back(&self.registry);
            }
        }
        if !refused.is_empty() {
            self.warn(format_args!(
                "some of {}'s metrics could not be mirrored ({refused:?}); see sonde_scrape_refused_total",
                self.job
            ));
        }
        stats.refused = refused;
    }

    fn register(
        &self,
        name: &str,
        family: &crate::text::Family,
        target_labels: &[String],
        refused: &mut BTreeMap<&'static str, u64>,
    ) -> Mirrored {
        let info = name == "target_info" && matches!(family.kind, Kind::Gauge | Kind::Untyped);
        let mut labels: Vec<String> = target_labels.to_vec();
        if family.kind == Kind::Summary {
            labels.push("quantile".into());
        }
        labels.push("job".into());
        labels.push("instance".into());
        if info {
            labels = ["job".to_owned(), "instance".to_owned()]
                .into_iter()
                .chain(self.info_attributes.iter().cloned())
                .collect();
        }
        let help = family.help.clone().unwrap_or_default();
        let r = &self.registry;
        let store = match family.kind {
            Kind::Counter => r
                .counter_f64(name.to_owned())
                .description(help)
                .labels(labels.clone())
                .build()
                .map(|f| Store::Counter(f, BySeries::default())),
            Kind::Gauge | Kind::Untyped | Kind::Summary => r
                .gauge_f64(name.to_owned())
                .description(help)
                .labels(labels.clone())
                .build()
                .map(|f| Store::Gauge(f, BySeries::default())),
            Kind::Histogram
                if family
                    .series
                    .values()
                    .next()
                    .is_some_and(|s| s.native.is_some() && s.buckets.len() <= 1) =>
            {
                // Native only (no classic bounds): sonde's grid keeps it at its resolution.
                r.histogram(name.to_owned())
                    .description(help)
                    .labels(labels.clone())
                    .build()
                    .map(|f| Store::Native(f, BySeries::default()))
            }
            Kind::Histogram => {
                let bounds: Vec<f64> = family
                    .series
                    .values()
                    .next()
                    .map(|s| {
                        s.buckets
                            .iter()
                            .map(|b| b.0)
                            .filter(|b| b.is_finite())
                            .collect()
                    })
                    .unwrap_or_default();
                r.histogram(name.to_owned())
                    .description(help)
                    .buckets(bounds.clone())
                    .labels(labels.clone())
                    .build()
                    .map(|f| Store::Histogram(f, bounds, BySeries::default()))
            }
        };
        let store = store.unwrap_or_else(|err| {
            *refused.entry("cannot_register").or_default() += 1;
            self.warn(format_args!(
                "{}'s metric {name} is not mirrored: {err}",
                self.job
            ));
            Store::Refused
        });
        Mirrored {
            labels,
            store,
            info,
        }
    }
}

impl Mirrored {
    /// Gives the family back to the registry once no source fills it; never `target_info`,
    /// which every source of the registry shares (OTLP senders' series included).
    fn give_back(&self, registry: &Registry) {
        if !self.info {
            self.store.remove_if_unused(registry);
        }
    }

    /// Removes every series of this family that the mirror created.
    fn remove_all(&mut self, job: &str, instance: &str) {
        let names = &self.labels;
        let info = self.info;
        let values = |l: &Labels| {
            if info {
                info_values(l, &names[2..], job, instance)
            } else {
                label_values(l, names, job, instance)
            }
        };
        match &mut self.store {
            Store::Counter(f, last) => last.drain().for_each(|(l, _)| {
                f.remove(&values(&l));
            }),
            Store::Gauge(f, last) => last.drain().for_each(|(l, _)| {
                f.remove(&values(&l));
            }),
            Store::Histogram(f, _, last) => last.drain().for_each(|(l, _)| {
                f.remove(&values(&l));
            }),
            Store::Native(f, last) => last.drain().for_each(|(l, _)| {
                f.remove(&values(&l));
            }),
            Store::Refused => {}
        }
    }
}

/// A scraped label name as mirrored: `job` and `instance` are the target's own.
fn renamed(k: &str) -> &str {
    match k {
        "job" => "exported_job",
        "instance" => "exported_instance",
        other => other,
    }
}

/// The label names of a family's series, sorted, `job`/`instance` renamed.
fn target_label_names<'a>(series: impl Iterator<Item = &'a Labels>) -> Vec<String> {
    let mut names: Vec<String> = series
        .flat_map(|l| l.iter().map(|(k, _)| renamed(k).to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Removes from `family` (and from `series`) the series that the scrape `generation` did not
/// see: gone from the target. `values` gives a series' label values in the family.
fn remove_unseen<M: Instrument, V>(
    family: &Family<M>,
    series: &mut BySeries<V>,
    generation: u64,
    values: impl Fn(&Labels) -> Vec<String>,
) {
    series.retain(|l, (_, seen)| {
        *seen == generation || {
            family.remove(&values(l));
            false
        }
    });
}

/// The values of `labels` in the order of `names` (missing ones `""`), with job and instance.
fn label_values(labels: &Labels, names: &[String], job: &str, instance: &str) -> Vec<String> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "job" => job.to_owned(),
            "instance" => instance.to_owned(),
            n => labels
                .iter()
                .find(|(k, _)| renamed(k) == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// A `target_info` series' values for the shared family: job, instance, then each of the
/// `attributes` as the target rendered it (dots as underscores).
fn info_values(labels: &Labels, attributes: &[String], job: &str, instance: &str) -> Vec<String> {
    let mut values = vec![job.to_owned(), instance.to_owned()];
    values.extend(attributes.iter().map(|a| {
        labels
            .iter()
            .find(|(k, _)| same_name(k, a))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }));
    values
}

/// The labels of a target's `target_info` series that the shared family keeps (those named
/// like one of `attributes`, dots as underscores).
fn info_key(labels: &Labels, attributes: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| attributes.iter().any(|a| same_name(k, a)))
        .cloned()
        .collect()
}

/// Whether a rendered label name (`service_version`) is an attribute (`service.version`).
fn same_name(rendered: &str, attribute: &str) -> bool {
    rendered.len() == attribute.len()
        && rendered
            .bytes()
            .zip(attribute.bytes())
            .all(|(k, a)| k == a || (k == b'_' && a == b'.'))
}

/// A summary series as gauge points, one per quantile.
fn quantile_points(labels: &Labels, s: &Series) -> Vec<(Labels, f64)> {
    s.quantiles
        .iter()
        .map(|(q, v)| {
            let mut l = labels.clone();
            l.push(("quantile".into(), q.to_string()));
            (l, *v)
        })
        .collect()
}

/// Per-bucket (not cumulative) counts of `s` for `bounds` (+Inf last), or `None` when its
/// finite bounds are not `bounds` or its counts go down.
fn bucket_counts(s: &Series, bounds: &[f64]) -> Option<Vec<u64>> {
    let finite: Vec<f64> = s
        .buckets
        .iter()
        .map(|b| b.0)
        .filter(|b| b.is_finite())
        .collect();
    if finite != bounds {
        return None;
    }
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0.0;
    for (_, cum) in s.buckets.iter().filter(|b| b.0.is_finite()) {
        if *cum < below || !cum.is_finite() {
            return None;
        }
        out.push((cum - below) as u64);
        below = *cum;
    }
    let total = s.total();
    if total < below {
        return None;
    }
    out.push((total - below) as u64);
    Some(out)
}

/// What the fuzz target (`crates/sonde-scrape/fuzz`) drives: a target's mirror fed with
/// bodies instead of fetches. Compiled under cargo-fuzz (`--cfg fuzzing`), and in this crate's
/// tests, which keep it working.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    use super::*;

    /// One target's mirror into a registry.
    pub struct Mirrors(Mirror);

    impl Mirrors {
        /// A mirror of target `n` of the job `fuzz` into `registry` (targets of other `n`
        /// are other instances).
        pub fn new(registry: &Registry, n: u8) -> Mirrors {
            let url = format!("http://127.0.0.1:{}/metrics", 9000 + u16::from(n));
            Mirrors(Mirror::new(registry, &Target::new("fuzz", url)))
        }

        /// Parses a body as the fetch does (text read lossily as UTF-8, or protobuf) with this
        /// sample limit, and records it as a scrape does: mirrored, or everything marked stale.
        pub fn scrape(&mut self, body: &[u8], protobuf: bool, sample_limit: usize) {
            let parsed = crate::fetch::parse_body(body, protobuf, sample_limit);
            let fetched = parsed.map_err(|e| e.to_string());
            let stats = ScrapeStats::default();
            self.0.record(fetched, "http://fuzz", Instant::now(), stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fuzzing::Mirrors;
    use sonde_core::Registry;

    #[test]
    fn the_fuzz_hook_mirrors_a_body_and_a_failed_scrape_clears_it() {
        let registry = Registry::new();
        let mut target = Mirrors::new(&registry, 0);
        target.scrape(b"# TYPE jobs counter\njobs_total{q=\"a\"} 3\n", false, 100);
        let snap = registry.snapshot();
        let jobs = snap.family("jobs").expect("mirrored");
        assert_eq!(jobs.series.len(), 1);
        drop(snap);
        // Past the sample limit: the scrape fails, and its series go.
        target.scrape(b"jobs_total 1\njobs_total{q=\"b\"} 2\n", false, 1);
        assert!(registry.snapshot().family("jobs").is_none());
    }
}
