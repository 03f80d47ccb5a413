//! Starting, reloading and stopping the agent's components around one registry, so a reload
//! (SIGHUP) keeps every series.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use sonde_core::{Component, Registry, Resource};
use tracing::{error, info, warn};

use crate::config::Config;

/// Runs until SIGTERM or SIGINT.
pub fn run(config: Config, path: Option<String>) -> Result<(), String> {
    // The series cap follows the bytes: no series takes less than about 100 bytes.
    let registry = Registry::with_budget(
        config.agent.max_series_per_family,
        sonde_core::MemoryBudget::new(config.agent.memory_budget / 100, config.agent.memory_budget),
    );
    let telemetry = AgentTelemetry::register(&registry);
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // The agent's own process, once for the agent's lifetime (its series survive reloads).
    let mut own = if config.own_process {
        // Unlabelled: process.* is the agent alone (procstat has its own procstat.* names).
        match sonde_process::ProcessCollector::current()
            .registry(&registry)
            .prometheus_names(config.process_prometheus_names)
            .install()
        {
            Ok(p) => Some(p),
            Err(e) => {
                warn!("own process metrics unavailable: {e}");
                None
            }
        }
    } else {
        None
    };
    // Once, before anything exports: the cloud attributes join every resource.
    let detectors: Vec<crate::detect::Detector> = config
        .agent
        .resource_detectors
        .iter()
        .filter_map(|d| crate::detect::Detector::parse(d))
        .collect();
    let _ = DETECTED.set(crate::detect::detect(
        &detectors,
        config.agent.resource_detection_timeout,
    ));
    let mut running = Running::start(&config, &registry)?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        prometheus = running.prometheus_addr().as_deref().unwrap_or("off"),
        statsd = running.statsd_addr().as_deref().unwrap_or("off"),
        "sonde-agent started"
    );
    let mut config = config;
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                info!("SIGHUP: reloading the configuration");
                match crate::load(path.as_deref()) {
                    Err(e) => {
                        telemetry.reload(false);
                        error!("the new configuration is invalid, keeping the current one:\n{e}");
                    }
                    Ok(new) => {
                        // Unchanged components keep running; see `Running::apply`.
                        match running.apply(&new, &registry, config.agent.shutdown_timeout) {
                            Ok(()) => {
                                config = new;
                                telemetry.reload(true);
                                info!("configuration reloaded");
                            }
                            Err(e) => {
                                telemetry.reload(false);
                                error!(
                                    "the new configuration failed to start ({e}); the sections that did not start keep their previous settings"
                                );
                                if let Some(applied) = &running.config {
                                    config = applied.clone();
                                }
                            }
                        }
                    }
                }
            }
            SIGTERM | SIGINT => {
                info!("shutting down: delivering the last interval");
                let ok = running.stop(config.agent.shutdown_timeout);
                // Stopped on purpose: its drop then has nothing to say.
                if let Some(p) = own.take() {
                    let _ = p.shutdown(Duration::ZERO);
                }
                if ok {
                    info!("stopped");
                } else {
                    warn!("stopped, but some data was not delivered (see above)");
                }
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

/// `sonde.agent.*` self-metrics; left out if the names are taken.
struct AgentTelemetry {
    reloads: Option<sonde_core::Family<sonde_core::Counter>>,
}

impl AgentTelemetry {
    fn register(registry: &Registry) -> AgentTelemetry {
        if let Ok(f) = registry
            .gauge("sonde.agent.info")
            .description("Always 1; the agent's version as a label.")
            .labels(["version"])
            .build()
        {
            f.with(&[env!("CARGO_PKG_VERSION")]).set(1);
        }
        let reloads = registry
            .counter("sonde.agent.reloads")
            .description("Configuration reloads (SIGHUP), by result.")
            .labels(["result"])
            .build()
            .ok();
        AgentTelemetry { reloads }
    }

    fn reload(&self, ok: bool) {
        if let Some(f) = &self.reloads {
            f.with(&[if ok { "success" } else { "failure" }]).inc();
        }
    }
}

/// What a configuration started. A reload ([`Running::apply`]) keeps every component whose
/// section did not change, so its sockets, StatsD ingest state, delta readers and queues carry
/// on as if nothing happened.
struct Running {
    /// The configuration the components run (a section whose restart failed keeps the old one).
    config: Option<Config>,
    prometheus: Option<sonde_prometheus::PrometheusServer>,
    otlp: Slot<Otlp>,
    cloudwatch: Slot<CloudWatch>,
    emf: Slot<Emf>,
    remote_write: Slot<RemoteWrite>,
    statsd: Option<Arc<sonde_statsd::StatsdServer>>,
    prober: Option<sonde_probes::RunningProber>,
    host: Option<Arc<sonde_host::HostMetrics>>,
    procstat: Option<Arc<sonde_host::ProcstatMetrics>>,
    cgroups: Option<Arc<sonde_host::CgroupMetrics>>,
    scrape: Option<sonde_scrape::ScrapeSource>,
    otlp_in: Option<sonde_otlp_receiver::OtlpReceiver>,
    tick: Arc<Mutex<Tick>>,
    ticker: Option<(Sender<TickMsg>, JoinHandle<()>)>,
}

/// What the timer thread works on; swapped under the lock on a reload, so the thread (and its
/// set-rotation schedule) survives reloads.
#[derive(Default)]
struct Tick {
    host: Option<Arc<sonde_host::HostMetrics>>,
    procstat: Option<Arc<sonde_host::ProcstatMetrics>>,
    cgroups: Option<Arc<sonde_host::CgroupMetrics>>,
    statsd: Option<Arc<sonde_statsd::StatsdServer>>,
    emf: Option<Arc<sonde_cloudwatch::EmfWriter>>,
    host_every: Duration,
    agent_every: Duration,
}

enum TickMsg {
    /// The parts or intervals changed.
    Wake,
    Stop,
}

/// What `[agent] resource_detectors` found at start (EC2, ECS).
static DETECTED: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

fn resource(config: &Config) -> Resource {
    // Cloud attributes found at start join the detected ones, below OTEL_RESOURCE_ATTRIBUTES.
    let mut r = Resource::detect_with(DETECTED.get().into_iter().flatten().cloned());
    if std::env::var("OTEL_SERVICE_NAME").is_err()
        && r.get("service.name")
            .is_some_and(|s| s.starts_with("unknown_service"))
    {
        r = r.with("service.name", "sonde-agent");
    }
    for (k, v) in &config.resource {
        r = r.with(k.clone(), v.clone());
    }
    r
}

/// A push exporter the agent runs from one optional section of its configuration: how to find
/// its section, start it and hand its state to a successor. Every push exporter is staged,
/// swapped, handed over and stopped by the same [`Slot`] code.
trait Push {
    /// The section that starts it.
    type Section: PartialEq + Clone + 'static;
    /// What the agent holds while it runs.
    type Handle: Component + 'static;
    /// Its section in `c`.
    fn section(c: &Config) -> &Option<Self::Section>;
    /// Its section in `c`, to put back the one that runs after a failed restart.
    fn section_mut(c: &mut Config) -> &mut Option<Self::Section>;
    /// The durable queue directory `s` names (kept across a reload: restarted in place).
    fn queue_dir(s: &Self::Section) -> Option<&std::path::Path>;
    /// Starts it; its deltas continue `deltas` (its predecessor's), so nothing is counted twice.
    fn start(
        s: &Self::Section,
        registry: &Registry,
        resource: &Resource,
        deltas: Option<sonde_core::DeltaState>,
    ) -> Result<Self::Handle, String>;
    /// The delta state a successor continues.
    fn deltas(h: &Self::Handle) -> Option<sonde_core::DeltaState>;
}

/// Implements [`Push`] for each kind from one line: the kind, its section in [`Config`], the
/// section and handle types, whether the section names a durable queue, how it starts
/// `(section, registry, resource, deltas)` and the delta state a successor continues.
macro_rules! push_kinds {
    ($($kind:ident: $field:ident, $section:ty => $handle:ty, queue: $queue:expr, start: $start:expr, deltas: $deltas:expr;)*) => {$(
        struct $kind;

        impl Push for $kind {
            type Section = $section;
            type Handle = $handle;
            fn section(c: &Config) -> &Option<Self::Section> {
                &c.$field
            }
            fn section_mut(c: &mut Config) -> &mut Option<Self::Section> {
                &mut c.$field
            }
            fn queue_dir(s: &Self::Section) -> Option<&std::path::Path> {
                let queue: fn(&Self::Section) -> Option<&sonde_push::DiskQueueConfig> = $queue;
                queue(s).map(|q| q.dir.as_path())
            }
            fn start(
                s: &Self::Section,
                registry: &Registry,
                resource: &Resource,
                deltas: Option<sonde_core::DeltaState>,
            ) -> Result<Self::Handle, String> {
                let start: fn(
                    &Self::Section,
                    &Registry,
                    &Resource,
                    Option<sonde_core::DeltaState>,
                ) -> Result<Self::Handle, String> = $start;
                start(s, registry, resource, deltas)
            }
            fn deltas(h: &Self::Handle) -> Option<sonde_core::DeltaState> {
                let deltas: fn(&Self::Handle) -> Option<sonde_core::DeltaState> = $deltas;
                deltas(h)
            }
        }
    )*};
}

push_kinds! {
    Otlp: otlp, crate::config::OtlpSection => sonde_otlp::OtlpMetricsExporter,
        queue: |s| s.queue.as_ref(),
        start: |s, registry, resource, deltas| start_push(
            reading(s.config.builder(), registry, &s.select, resource, deltas),
            s.queue.as_ref(),
            "exporters.otlp",
        ),
        deltas: |h| h.delta_state();
    CloudWatch: cloudwatch, crate::config::CloudWatchSection => sonde_cloudwatch::CloudWatchExporter,
        queue: |s| s.queue.as_ref(),
        start: |s, registry, resource, deltas| start_push(
            cloudwatch_builder(s, registry, resource, deltas),
            s.queue.as_ref(),
            "exporters.cloudwatch",
        ),
        deltas: |h| Some(h.delta_state());
    // Shared with the timer thread, which flushes it every interval.
    Emf: emf, crate::config::EmfSection => Arc<sonde_cloudwatch::EmfWriter>,
        queue: |_| None,
        start: |s, registry, resource, deltas| start_emf(s, registry, resource, deltas).map(Arc::new),
        deltas: |h| Some(h.delta_state());
    RemoteWrite: remote_write, crate::config::RemoteWriteSection => sonde_prometheus::RemoteWriter,
        queue: |s| s.queue.as_ref(),
        start: |s, registry, resource, _deltas| start_remote_write(s, registry, resource),
        deltas: |_| None;
}

/// What a reload does to one push exporter, decided (and any new one started) before anything
/// is swapped.
#[derive(Default)]
enum Plan<P: Push> {
    /// Its section and the resource are unchanged: it runs on untouched.
    #[default]
    Keep,
    /// Replaced by what was staged (or removed, with `None`); the old one delivers what it
    /// holds after the sources stop.
    Replace(Option<P::Handle>),
    /// The new section keeps the durable queue directory: restarted in place at apply, the old
    /// one letting go of the directory first.
    HandOver,
}

/// The durable queue directory of `P`'s section in `c`.
fn queue_of<P: Push>(c: Option<&Config>) -> Option<&std::path::Path> {
    c.and_then(|c| P::section(c).as_ref())
        .and_then(P::queue_dir)
}

/// What carrying out a reload's plans works with.
struct Apply<'a> {
    old: Option<&'a Config>,
    new: &'a Config,
    /// The configuration that runs after the reload (a section whose restart failed keeps the
    /// old one).
    applied: &'a mut Config,
    registry: &'a Registry,
    timeout: Duration,
    /// Exporters replaced, to stop once the sources have stopped.
    replaced: &'a mut Vec<Arc<dyn Component>>,
    errors: &'a mut Vec<String>,
}

/// One push exporter of the running configuration.
struct Slot<P: Push> {
    running: Option<P::Handle>,
}

impl<P: Push> Default for Slot<P> {
    fn default() -> Self {
        Slot { running: None }
    }
}

impl<P: Push> Slot<P> {
    /// Decides what `new` does to this exporter; a replacement starts now, next to the running
    /// one, its deltas continuing the running one's.
    fn stage(
        &self,
        old: Option<&Config>,
        new: &Config,
        registry: &Registry,
        resource: &Resource,
    ) -> Result<Plan<P>, String> {
        if old.is_some_and(|o| o.resource == new.resource && P::section(o) == P::section(new)) {
            return Ok(Plan::Keep);
        }
        if self.running.is_some()
            && matches!((queue_of::<P>(old), queue_of::<P>(Some(new))), (Some(a), Some(b)) if a == b)
        {
            return Ok(Plan::HandOver);
        }
        let Some(section) = P::section(new) else {
            return Ok(Plan::Replace(None));
        };
        let deltas = self.running.as_ref().and_then(P::deltas);
        P::start(section, registry, resource, deltas).map(|h| Plan::Replace(Some(h)))
    }

    /// Carries `plan` out. A replaced exporter joins `replaced` (stopped later, after the
    /// sources); a hand-over restarts in place and, if the new section cannot start, starts the
    /// old one again, puts its section back into `applied` and reports the error.
    fn apply(&mut self, plan: Plan<P>, at: &mut Apply<'_>) {
        match plan {
            Plan::Keep => {}
            Plan::Replace(next) => {
                if let Some(h) = std::mem::replace(&mut self.running, next) {
                    at.replaced.push(Arc::new(h));
                }
            }
            Plan::HandOver => {
                let Some(section) = P::section(at.new) else {
                    return;
                };
                let previous = at
                    .old
                    .and_then(|o| P::section(o).as_ref().map(|s| (s, resource(o))));
                let started = self.hand_over(
                    section,
                    &resource(at.new),
                    previous,
                    at.registry,
                    at.timeout,
                );
                if let Err((e, running)) = started {
                    *P::section_mut(at.applied) = running;
                    at.errors.push(e);
                }
            }
        }
    }

    /// Restarts on the durable queue directory the new section keeps: the old exporter stops
    /// first (what it has not sent stays queued there, for the new one); if the new one cannot
    /// start, the old section is started again. The error comes with the section that runs then.
    fn hand_over(
        &mut self,
        new: &P::Section,
        resource: &Resource,
        old: Option<(&P::Section, Resource)>,
        registry: &Registry,
        timeout: Duration,
    ) -> Result<(), (String, Option<P::Section>)> {
        let deltas = self.running.as_ref().and_then(P::deltas);
        if let Some(e) = self.take()
            && let Err(err) = e.shutdown(timeout)
        {
            warn!("{err}");
        }
        // An old exporter that did not stop in time lets go of the directory when its thread
        // ends: waited for (bounded), rather than failing the new one on a held lock.
        if let Some(dir) = P::queue_dir(new) {
            let until = Instant::now() + timeout.max(Duration::from_secs(1));
            while sonde_push::disk::in_use(dir) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let err = match P::start(new, registry, resource, deltas.clone()) {
            Ok(h) => {
                self.running = Some(h);
                return Ok(());
            }
            Err(err) => err,
        };
        let Some((section, resource)) = old else {
            return Err((err, None));
        };
        match P::start(section, registry, &resource, deltas) {
            Ok(h) => {
                self.running = Some(h);
                Err((err, Some(section.clone())))
            }
            Err(again) => {
                warn!("the previous settings did not start again either: {again}");
                Err((err, None))
            }
        }
    }

    /// The running exporter as a component, taken out (to stop it).
    fn take(&mut self) -> Option<Arc<dyn Component>> {
        self.running
            .take()
            .map(|h| Arc::new(h) as Arc<dyn Component>)
    }
}

/// Shuts `parts` down side by side, each within what is left of `timeout`; logs each failure
/// and returns whether every one finished.
fn shutdown_all(parts: Vec<Arc<dyn Component>>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    std::thread::scope(|s| {
        let jobs: Vec<_> = parts
            .iter()
            .map(|c| {
                s.spawn(move || c.shutdown(deadline.saturating_duration_since(Instant::now())))
            })
            .collect();
        let mut ok = true;
        for j in jobs {
            match j.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    ok = false;
                    error!("{e}");
                }
                Err(_) => ok = false,
            }
        }
        ok
    })
}

/// Components started next to the running ones before anything is swapped (no shared socket),
/// so a failure leaves the running configuration untouched.
#[derive(Default)]
struct Staged {
    prometheus: Option<Option<sonde_prometheus::PrometheusServer>>,
    otlp: Plan<Otlp>,
    cloudwatch: Plan<CloudWatch>,
    emf: Plan<Emf>,
    remote_write: Plan<RemoteWrite>,
    statsd: Option<Option<sonde_statsd::StatsdServer>>,
    prober: Option<Option<sonde_probes::RunningProber>>,
}

impl Staged {
    /// Undoes a reload that failed half-way: stops what was started (nothing was delivered by
    /// it yet that the running components do not also deliver), and removes the series of the
    /// probes the running prober does not have.
    fn discard(self, running: Option<&sonde_probes::RunningProber>) {
        if let Some(Some(p)) = self.prober {
            match running {
                Some(r) => p.replace_with(r),
                None => p.uninstall(),
            }
        }
        if let Some(Some(s)) = self.statsd {
            let _ = s.shutdown(Duration::from_secs(1));
        }
        if let Some(Some(p)) = self.prometheus {
            let _ = p.shutdown(Duration::from_secs(1));
        }
        let mut started = Vec::new();
        started.extend(staged_handle::<Otlp>(self.otlp));
        started.extend(staged_handle::<CloudWatch>(self.cloudwatch));
        started.extend(staged_handle::<Emf>(self.emf));
        started.extend(staged_handle::<RemoteWrite>(self.remote_write));
        let _ = shutdown_all(started, Duration::from_secs(1));
    }
}

/// The exporter a plan started, if it started one.
fn staged_handle<P: Push>(plan: Plan<P>) -> Option<Arc<dyn Component>> {
    match plan {
        Plan::Replace(Some(h)) => Some(Arc::new(h)),
        _ => None,
    }
}

/// A section `pick`s from the configuration changed (always, on the first start).
fn changed<T: PartialEq>(old: Option<&Config>, new: &Config, pick: impl Fn(&Config) -> T) -> bool {
    old.is_none_or(|o| pick(o) != pick(new))
}

/// Where StatsD listens: UDP, unix datagram path, TCP.
type StatsdListen = (
    Option<std::net::SocketAddr>,
    Option<std::path::PathBuf>,
    Option<std::net::SocketAddr>,
);

fn statsd_listen(c: &Config) -> Option<StatsdListen> {
    let s = &c.statsd.server;
    (c.statsd.enabled && (s.udp.is_some() || s.unix.is_some() || s.tcp.is_some()))
        .then(|| (s.udp, s.unix.clone(), s.tcp))
}

/// Everything StatsD is started from.
fn statsd_settings(c: &Config) -> (crate::config::StatsdSection, usize) {
    (c.statsd.clone(), c.agent.max_series_per_family)
}

impl Running {
    fn start(config: &Config, registry: &Registry) -> Result<Running, String> {
        let tick = Arc::new(Mutex::new(Tick {
            host_every: config.host.config.interval,
            agent_every: config.agent.interval,
            ..Tick::default()
        }));
        let mut r = Running {
            config: None,
            prometheus: None,
            otlp: Slot::default(),
            cloudwatch: Slot::default(),
            emf: Slot::default(),
            remote_write: Slot::default(),
            statsd: None,
            prober: None,
            host: None,
            procstat: None,
            cgroups: None,
            scrape: None,
            otlp_in: None,
            ticker: Some(start_ticker(tick.clone())?),
            tick,
        };
        // Anything that fails to start stops what already started.
        if let Err(e) = r.apply(config, registry, Duration::from_secs(2)) {
            r.stop(Duration::from_secs(2));
            return Err(e);
        }
        Ok(r)
    }

    /// Moves to `new`: unchanged components keep running untouched; changed ones are replaced,
    /// the new one started before the old one stops wherever they share nothing (a listener
    /// on a new address binds before the old one closes); removed ones stop and their series
    /// go. Replaced push exporters deliver what they hold within `timeout`; a replaced OTLP
    /// (delta), CloudWatch or EMF exporter hands its delta state to its successor, so each
    /// change is exported once, by one of them.
    ///
    /// Not carried over (yet): a new StatsD server (changed `[statsd]`) starts from empty ingest
    /// state, so a tag set unlike the family's first one is refused as `type_conflict`, and a
    /// `/metrics` server whose TLS or users changed on the same address closes before the new
    /// one binds (a few milliseconds without a listener).
    /// Host and procstat collectors whose section changed re-create their series.
    ///
    /// A component that cannot start next to its predecessor fails the reload with nothing
    /// changed. One that must take its predecessor's place (same listening address, host and
    /// procstat collectors) and then fails to start is restarted from its previous section,
    /// and the reload reports the error.
    fn apply(
        &mut self,
        new: &Config,
        registry: &Registry,
        timeout: Duration,
    ) -> Result<(), String> {
        let old = self.config.take();
        let old = old.as_ref();
        let mut staged = Staged::default();
        if let Err(e) = self.stage(old, new, registry, &mut staged) {
            staged.discard(self.prober.as_ref());
            self.config = old.cloned();
            return Err(e);
        }
        let mut applied = new.clone();
        let mut errors = Vec::new();
        let mut replaced: Vec<Arc<dyn Component>> = Vec::new();
        // Listeners: a staged one (new address) takes over, then the old one closes.
        match staged.prometheus.take() {
            Some(next) => {
                if let Some(p) = std::mem::replace(&mut self.prometheus, next)
                    && let Err(e) = p.shutdown(timeout)
                {
                    warn!("{e}");
                }
            }
            None if changed(old, new, |c| (c.prometheus.clone(), c.resource.clone())) => {
                // Same address, other settings (TLS, users, resource): the new server takes
                // the old one's listening socket, so scrapes arriving meanwhile wait in its
                // backlog instead of being refused.
                let listener = self.prometheus.take().and_then(|p| p.into_listener());
                let resource = resource(new);
                match new
                    .prometheus
                    .as_ref()
                    .map(|p| start_prometheus_on(p, registry, &resource, listener))
                {
                    None => {}
                    Some(Ok(p)) => self.prometheus = Some(p),
                    Some(Err(e)) => {
                        errors.push(e);
                        if let Some(o) = old {
                            applied.prometheus = o.prometheus.clone();
                            let resource = self::resource(o);
                            self.prometheus = o
                                .prometheus
                                .as_ref()
                                .and_then(|p| start_prometheus(p, registry, &resource).ok());
                        }
                    }
                }
            }
            None => {}
        }
        // Push exporters: a staged replacement takes over (the old one delivers after the
        // sources stop), or one keeping its durable queue restarts in place.
        let plans = (
            std::mem::take(&mut staged.otlp),
            std::mem::take(&mut staged.cloudwatch),
            std::mem::take(&mut staged.emf),
            std::mem::take(&mut staged.remote_write),
        );
        let mut apply = Apply {
            old,
            new,
            applied: &mut applied,
            registry,
            timeout,
            replaced: &mut replaced,
            errors: &mut errors,
        };
        self.otlp.apply(plans.0, &mut apply);
        self.cloudwatch.apply(plans.1, &mut apply);
        self.emf.apply(plans.2, &mut apply);
        self.remote_write.apply(plans.3, &mut apply);
        let mut old_statsd = None;
        match staged.statsd.take() {
            Some(next) => {
                old_statsd = std::mem::replace(&mut self.statsd, next.map(Arc::new));
            }
            None if changed(old, new, statsd_settings) => {
                // Same address: the old server closes first.
                if let Some(s) = self.statsd.take() {
                    lock(&self.tick).statsd = None;
                    stop_statsd(&s, timeout);
                }
                self.statsd = start_or_restore(
                    new,
                    old,
                    &mut errors,
                    |o| applied.statsd = o.statsd.clone(),
                    |c| {
                        statsd_listen(c)
                            .map(|_| start_statsd(c, registry))
                            .transpose()
                    },
                )
                .unwrap_or_else(Option::flatten)
                .map(Arc::new);
            }
            None => {}
        }
        if let Some(next) = staged.prober.take() {
            match (std::mem::replace(&mut self.prober, next), &self.prober) {
                (Some(old), Some(next)) => old.replace_with(next),
                (Some(old), None) => old.uninstall(),
                (None, _) => {}
            }
        }
        // The OTLP receiver: the old one stops (senders retry a refused connection) and the
        // new one binds; the series received so far stay, and the new one takes over what
        // turns the senders' cumulative points into increments, so nothing counts twice.
        if changed(old, new, |c| c.otlp_in.clone()) {
            let previous = self.otlp_in.take();
            if let Some(r) = &previous {
                let _ = r.shutdown(timeout);
            }
            if let Some(o) = &new.otlp_in {
                let mut b = o
                    .config
                    .builder()
                    .registry(registry.clone())
                    .target_info_attributes(o.target_info_attributes.iter().cloned());
                if let Some(r) = &previous {
                    b = b.continue_from(r);
                }
                match b.start() {
                    Ok(r) => self.otlp_in = Some(r),
                    Err(e) => {
                        // The stopped receiver keeps what it received, for the next reload.
                        self.otlp_in = previous;
                        applied.otlp_in = None;
                        errors.push(format!("[sources.otlp]: {e}"));
                    }
                }
            }
        }
        // Scrape targets: the old source's series go with it, the new one mirrors its targets
        // from the first scrape (checked when the configuration was read, so this starts).
        if changed(old, new, |c| c.scrape.clone()) {
            if let Some(s) = self.scrape.take() {
                s.uninstall();
            }
            if !new.scrape.is_empty() {
                match sonde_scrape::ScrapeSource::start(registry, new.scrape.clone()) {
                    Ok(s) => {
                        self.scrape = Some(s);
                        applied.scrape = new.scrape.clone();
                    }
                    Err(e) => {
                        applied.scrape.clear();
                        errors.push(format!("[[sources.scrape]]: {e}"));
                    }
                }
            } else {
                applied.scrape.clear();
            }
        }
        // Collectors that read the same sources cannot run twice: the old one's series go
        // (a process or CPU no longer watched disappears), then the new one installs.
        // The interval alone is the ticker's: the collector and its series stay as they are.
        if changed(old, new, |c| {
            (c.host.enabled, c.host.config.per_cpu, c.host.view.clone())
        }) {
            if let Some(h) = self.host.take() {
                lock(&self.tick).host = None;
                h.uninstall();
            }
            self.host = start_or_restore(
                new,
                old,
                &mut errors,
                |o| applied.host = o.host.clone(),
                |c| start_host(c, registry),
            )
            .unwrap_or_else(Option::flatten)
            .map(Arc::new);
        }
        if changed(old, new, |c| c.procstat.clone()) {
            // The old collector stops first; its series go only for the matchers the new
            // configuration no longer has (the others go on, read by the new collector).
            let previous = self.procstat.take();
            if let Some(p) = &previous {
                lock(&self.tick).procstat = None;
                let _ = p.shutdown(timeout);
            }
            let started = start_or_restore(
                new,
                old,
                &mut errors,
                |o| applied.procstat = o.procstat.clone(),
                |c| start_procstat(c, registry),
            );
            if let (Ok(p), Some(old)) = (&started, previous) {
                let keep: Vec<String> = p
                    .iter()
                    .flat_map(|p| p.matches())
                    .map(|(label, _)| label)
                    .collect();
                old.uninstall_except(&keep);
            }
            self.procstat = started.unwrap_or_else(Option::flatten).map(Arc::new);
        }
        // Cgroups: the old collector's series go (the new one may read another root or other
        // paths), then the new one installs.
        if changed(old, new, |c| c.cgroups.clone()) {
            if let Some(c) = self.cgroups.take() {
                lock(&self.tick).cgroups = None;
                c.uninstall();
            }
            match start_cgroups(new, registry) {
                Ok(c) => self.cgroups = c.map(Arc::new),
                Err(e) => {
                    errors.push(e);
                    applied.cgroups.enabled = false;
                }
            }
        }
        {
            let mut t = lock(&self.tick);
            t.host.clone_from(&self.host);
            t.procstat.clone_from(&self.procstat);
            t.cgroups.clone_from(&self.cgroups);
            t.statsd.clone_from(&self.statsd);
            t.emf.clone_from(&self.emf.running);
            t.host_every = applied.host.config.interval;
            t.agent_every = applied.agent.interval;
        }
        if let Some((tx, _)) = &self.ticker {
            let _ = tx.send(TickMsg::Wake);
        }
        // The timer thread no longer holds the old server: what it received is recorded and
        // its open set window published before the old exporters' last collection.
        if let Some(s) = old_statsd {
            stop_statsd(&s, timeout);
        }
        if !shutdown_all(replaced, timeout) {
            warn!("a replaced exporter did not deliver everything it held (see above)");
        }
        if let Some(c) = &applied.cloudwatch
            && old.is_none_or(|o| o.cloudwatch.as_ref() != Some(c))
        {
            // Collected now, not at the next tick, so the estimate sees the host's series.
            if let Some(h) = &self.host {
                h.collect();
            }
            if let Some(p) = &self.procstat {
                p.collect();
            }
            let preview = cloudwatch_builder(c, registry, &resource(&applied), None).cost_preview();
            info!(
                metrics = preview.metrics,
                calls_per_interval = preview.requests_per_interval,
                usd_per_month = format!(
                    "{:.2}",
                    preview.metrics_usd_per_month + preview.requests_usd_per_month
                ),
                "CloudWatch: {} metrics from the series here now (StatsD and other sources add theirs as they arrive), ~${:.2}/month at list price; `sonde-agent cost CONFIG` shows the detail",
                preview.metrics,
                preview.metrics_usd_per_month + preview.requests_usd_per_month
            );
        }
        self.config = Some(applied);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Starts, next to the running components, the changed ones that share nothing with their
    /// predecessor.
    fn stage(
        &self,
        old: Option<&Config>,
        new: &Config,
        registry: &Registry,
        staged: &mut Staged,
    ) -> Result<(), String> {
        let resource = resource(new);
        let exporter_changed = |pick: &dyn Fn(&Config) -> bool| {
            old.is_none_or(|o| o.resource != new.resource || pick(o))
        };
        // StatsD first: once /metrics answers, a datagram sent to the agent is received (a
        // script that waits for /metrics and then sends loses nothing).
        if changed(old, new, statsd_settings) {
            let running = self
                .statsd
                .is_some()
                .then(|| old.and_then(statsd_listen))
                .flatten();
            let next = statsd_listen(new);
            // Another address (or none): started first, so no datagram finds nothing bound.
            if running.is_none()
                || next.is_none()
                || !shares_address(running.as_ref(), next.as_ref())
            {
                staged.statsd = Some(match next {
                    Some(_) => Some(start_statsd(new, registry)?),
                    None => None,
                });
            }
        }
        if exporter_changed(&|o| o.prometheus != new.prometheus) {
            let same_socket = old.and_then(|o| o.prometheus.as_ref()).map(|p| p.listen)
                == new.prometheus.as_ref().map(|p| p.listen)
                && self.prometheus.is_some();
            if !same_socket {
                staged.prometheus = Some(match &new.prometheus {
                    Some(p) => Some(start_prometheus(p, registry, &resource)?),
                    None => None,
                });
            }
        }
        staged.otlp = self.otlp.stage(old, new, registry, &resource)?;
        staged.cloudwatch = self.cloudwatch.stage(old, new, registry, &resource)?;
        staged.emf = self.emf.stage(old, new, registry, &resource)?;
        staged.remote_write = self.remote_write.stage(old, new, registry, &resource)?;
        if changed(old, new, |c| c.probes.clone()) {
            staged.prober = Some(if new.probes.is_empty() {
                None
            } else {
                Some(start_probes(new, registry)?)
            });
        }
        Ok(())
    }

    fn prometheus_addr(&self) -> Option<String> {
        self.prometheus.as_ref().map(|p| p.local_addr().to_string())
    }

    fn statsd_addr(&self) -> Option<String> {
        self.statsd
            .as_ref()
            .and_then(|s| s.local_addr())
            .map(|a| a.to_string())
    }

    /// Stops everything; push exporters deliver what they hold within `timeout`. Returns
    /// whether everything was delivered. Series stay (the process is exiting).
    fn stop(&mut self, timeout: Duration) -> bool {
        // The sources' stops are bounded by their own waits (a scrape in progress, StatsD's
        // flush); the push exporters then get the whole `timeout` to deliver, as before the
        // sources were stopped through the same trait.
        // The timer thread holds the StatsD server and the collectors: it stops first.
        if let Some((stop, t)) = self.ticker.take() {
            let _ = stop.send(TickMsg::Stop);
            let _ = t.join();
        }
        *lock(&self.tick) = Tick::default();
        // Sources next, so what they received is recorded before the exporters' last
        // collection. Whatever StatsD received is recorded and its open set window published
        // (a shorter last interval, rather than lost).
        let mut sources: Vec<Arc<dyn Component>> = Vec::new();
        if let Some(p) = self.prober.take() {
            sources.push(Arc::new(p));
        }
        if let Some(s) = self.scrape.take() {
            sources.push(Arc::new(s));
        }
        if let Some(r) = self.otlp_in.take() {
            sources.push(Arc::new(r));
        }
        if let Some(h) = self.host.take() {
            sources.push(h);
        }
        if let Some(p) = self.procstat.take() {
            sources.push(p);
        }
        if let Some(c) = self.cgroups.take() {
            sources.push(c);
        }
        if let Some(s) = self.statsd.take() {
            stop_statsd(&s, timeout);
        }
        // Sources report no delivery: their result does not decide the exit code.
        let _ = shutdown_all(sources, timeout);
        let exporters = [
            self.otlp.take(),
            self.cloudwatch.take(),
            self.emf.take(),
            self.remote_write.take(),
        ];
        let ok = shutdown_all(exporters.into_iter().flatten().collect(), timeout);
        // /metrics goes last (a final scrape sees the last values); what it still serves after
        // a short grace finishes in the background and does not decide the exit code.
        if let Some(p) = self.prometheus.take()
            && let Err(e) = p.shutdown(Duration::from_secs(1))
        {
            warn!("{e}");
        }
        ok
    }
}

/// Whether two StatsD listen settings share a socket address (one cannot bind while the other
/// holds it). Port 0 never clashes.
fn shares_address(a: Option<&StatsdListen>, b: Option<&StatsdListen>) -> bool {
    let (Some((au, ax, at)), Some((bu, bx, bt))) = (a, b) else {
        return false;
    };
    let udp = matches!((au, bu), (Some(x), Some(y)) if x == y && x.port() != 0);
    let unix = matches!((ax, bx), (Some(x), Some(y)) if x == y);
    let tcp = matches!((at, bt), (Some(x), Some(y)) if x == y && x.port() != 0);
    udp || unix || tcp
}

fn lock(tick: &Mutex<Tick>) -> std::sync::MutexGuard<'_, Tick> {
    tick.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts what `start` makes of the `new` configuration, for a component that had to give
/// its place up first (a listening address, the series of a collector). When it fails, the
/// error is kept and the `old` configuration's (`restore` puts its section back in what is
/// applied) starts again in its place: `Err` holds that one, if it started.
fn start_or_restore<T>(
    new: &Config,
    old: Option<&Config>,
    errors: &mut Vec<String>,
    restore: impl FnOnce(&Config),
    start: impl Fn(&Config) -> Result<T, String>,
) -> Result<T, Option<T>> {
    start(new).map_err(|e| {
        errors.push(e);
        old.and_then(|o| {
            restore(o);
            start(o).ok()
        })
    })
}

/// What a component's start error says in the agent's words: prefixed with the section of the
/// configuration file that set it up.
fn in_section<E: std::fmt::Display>(section: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("[{section}]: {e}")
}

/// Records what the server received, publishes the open set window and stops it.
fn stop_statsd(s: &sonde_statsd::StatsdServer, timeout: Duration) {
    if let Err(e) = s.flush(timeout) {
        warn!("{e}");
    }
    s.rotate_sets();
    let _ = s.shutdown(Duration::ZERO);
}

fn start_prometheus(
    p: &sonde_prometheus::PrometheusServerConfig,
    registry: &Registry,
    resource: &Resource,
) -> Result<sonde_prometheus::PrometheusServer, String> {
    start_prometheus_on(p, registry, resource, None)
}

/// Starts the `/metrics` server, on `listener` when a predecessor handed its socket over.
fn start_prometheus_on(
    p: &sonde_prometheus::PrometheusServerConfig,
    registry: &Registry,
    resource: &Resource,
    listener: Option<std::net::TcpListener>,
) -> Result<sonde_prometheus::PrometheusServer, String> {
    let mut builder = p
        .builder()
        .registry(registry.clone())
        .resource(resource.clone());
    if let Some(l) = listener {
        builder = builder.listener(l);
    }
    builder.install().map_err(|e| match e {
        // The library's message names its own settings; the agent's user has `listen`.
        sonde_prometheus::Error::Bind { addr, source } => format!(
            "[exporters.prometheus] listen = \"{addr}\": cannot listen: {source}; set another address with `listen` in [exporters.prometheus] or SONDE_EXPORTERS_PROMETHEUS_LISTEN (is another sonde-agent already running there?)"
        ),
        other => format!("[exporters.prometheus]: {other}"),
    })
}

/// The CloudWatch exporter's conversion settings: what it sends, what the cost preview prices.
fn cloudwatch_builder(
    c: &crate::config::CloudWatchSection,
    registry: &Registry,
    resource: &Resource,
    deltas: Option<sonde_core::DeltaState>,
) -> sonde_cloudwatch::CloudWatchBuilder {
    reading(c.config.builder(), registry, &c.select, resource, deltas)
}

/// Starts a push exporter's `builder` on the durable queue its section names, if any.
fn start_push<B: sonde_push::PushBuilder>(
    builder: B,
    queue: Option<&sonde_push::DiskQueueConfig>,
    section: &'static str,
) -> Result<B::Exporter, String> {
    let builder = match queue {
        Some(q) => builder.durable_queue(q.clone()),
        None => builder,
    };
    builder.install().map_err(in_section(section))
}

/// A push exporter's `builder` reading what an exporter of the agent reads
/// ([`read_settings`]), with the agent's resource.
fn reading<B: sonde_push::PushBuilder>(
    builder: B,
    registry: &Registry,
    selection: &sonde_core::Selection,
    resource: &Resource,
    deltas: Option<sonde_core::DeltaState>,
) -> B {
    builder
        .read_settings(read_settings(registry, selection, deltas))
        .resource(resource.clone())
}

/// What an exporter of the agent reads: the agent's registry, the series its section selects,
/// and the deltas of the exporter it replaces on a reload.
fn read_settings(
    registry: &Registry,
    selection: &sonde_core::Selection,
    deltas: Option<sonde_core::DeltaState>,
) -> sonde_push::ReadSettings {
    sonde_push::ReadSettings {
        registry: registry.clone(),
        selection: selection.clone(),
        continue_deltas: deltas,
    }
}

/// `sonde-agent cost`: what the CloudWatch exporter of `config` would send from this host,
/// with its selection and with everything, from the host, process and procstat series read
/// here now (StatsD, probes and OTLP add theirs as they arrive).
pub fn cost_report(config: &Config, origin: &str) -> Result<String, String> {
    use std::fmt::Write;
    let registry = Registry::new();
    let own = config
        .own_process
        .then(|| {
            sonde_process::ProcessCollector::current()
                .registry(&registry)
                .prometheus_names(config.process_prometheus_names)
                .install()
                .ok()
        })
        .flatten();
    let host = start_host(config, &registry)?;
    let procstat = start_procstat(config, &registry)?;
    let mut scraped = String::new();
    for t in &config.scrape {
        let stats = sonde_scrape::ScrapeSource::scrape_once(&registry, t);
        let _ = writeln!(
            scraped,
            "  [[sources.scrape]] {}: {}",
            t.job,
            match &stats.error {
                None => format!("{} series read", stats.series),
                Some(e) => format!("not read ({e})"),
            }
        );
    }
    // Twice: utilizations are rates between two reads.
    for _ in 0..2 {
        if let Some(h) = &host {
            h.collect();
        }
        if let Some(p) = &procstat {
            p.collect();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (section, note) = match &config.cloudwatch {
        Some(c) => (c.clone(), String::new()),
        None => (
            crate::config::CloudWatchSection {
                config: sonde_cloudwatch::CloudWatchConfig {
                    namespace: Some("sonde".into()),
                    ..Default::default()
                },
                select: crate::select::cloudwatch_default_for(
                    &config
                        .scrape
                        .iter()
                        .map(|t| t.job.clone())
                        .collect::<Vec<_>>(),
                ),
                queue: None,
            },
            format!(
                "[exporters.cloudwatch] is not enabled in {origin}: figures for its defaults.\n"
            ),
        ),
    };
    let resource = resource(config);
    let selected = cloudwatch_builder(&section, &registry, &resource, None).cost_preview();
    let everything = cloudwatch_builder(&section, &registry, &resource, None)
        .selection(sonde_core::Selection::new())
        .cost_preview();
    let mut out = note;
    if !scraped.is_empty() {
        let _ = writeln!(out, "Scrape targets read once:\n{scraped}");
    }
    let _ = writeln!(
        out,
        "What [exporters.cloudwatch] sends from this host ({origin}), read now:\n{selected}\n"
    );
    let _ = writeln!(
        out,
        "Without a selection (include = [\"*\"]): {} metrics, ~${:.2}/month.",
        everything.metrics,
        everything.metrics_usd_per_month + everything.requests_usd_per_month
    );
    let _ = write!(
        out,
        "StatsD and probe metrics are not counted here: each distinct name and dimension set they bring is one more metric (~$0.30/month each in the first 10,000)."
    );
    // Uninstalled on purpose: dropping the handles would log that they stopped.
    own.iter().for_each(|p| p.uninstall());
    host.iter().for_each(|h| h.uninstall());
    procstat.iter().for_each(|p| p.uninstall());
    Ok(out)
}

fn start_emf(
    e: &crate::config::EmfSection,
    registry: &Registry,
    resource: &Resource,
    deltas: Option<sonde_core::DeltaState>,
) -> Result<sonde_cloudwatch::EmfWriter, String> {
    e.config
        .builder()
        .read_settings(read_settings(registry, &e.select, deltas))
        .resource(resource.clone())
        .build()
        .map_err(in_section("exporters.emf"))
}

fn start_remote_write(
    rw: &crate::config::RemoteWriteSection,
    registry: &Registry,
    resource: &Resource,
) -> Result<sonde_prometheus::RemoteWriter, String> {
    rw.builder(registry, resource)
        .install()
        .map_err(in_section("exporters.remote_write"))
}

/// A collector's install result as the agent keeps it: its handle, or the error in the words of
/// its section.
fn installed<T, E: std::fmt::Display>(
    section: &'static str,
    result: Result<T, E>,
) -> Result<Option<T>, String> {
    result.map(Some).map_err(in_section(section))
}

fn start_host(
    config: &Config,
    registry: &Registry,
) -> Result<Option<sonde_host::HostMetrics>, String> {
    if !config.host.enabled {
        return Ok(None);
    }
    let collector = sonde_host::HostCollector::new()
        .registry(registry)
        .per_cpu(config.host.config.per_cpu);
    let collector = match &config.host.view {
        crate::config::HostView::Own => collector,
        crate::config::HostView::Root(root) => collector.host_root(root),
        crate::config::HostView::ProcSys(proc, sys) => collector.proc_and_sys(proc, sys),
    };
    installed("collectors.host", collector.install())
}

fn start_cgroups(
    config: &Config,
    registry: &Registry,
) -> Result<Option<sonde_host::CgroupMetrics>, String> {
    let c = &config.cgroups;
    if !c.enabled {
        return Ok(None);
    }
    let b = c.config.builder(&c.default_root).registry(registry);
    installed("collectors.cgroups", b.install())
}

/// One collector for every matcher, so the process list is read once per collection.
fn start_procstat(
    config: &Config,
    registry: &Registry,
) -> Result<Option<sonde_host::ProcstatMetrics>, String> {
    // Checked (patterns compiled) when the configuration was read.
    let mut matchers = config.procstat.iter().cloned();
    let Some(first) = matchers.next() else {
        return Ok(None);
    };
    let mut b = sonde_host::ProcstatCollector::checked(first).registry(registry);
    for m in matchers {
        b = b.checked_matcher(m);
    }
    installed("collectors.procstat", b.install())
}

fn start_statsd(
    config: &Config,
    registry: &Registry,
) -> Result<sonde_statsd::StatsdServer, String> {
    sonde_statsd::StatsdServer::builder()
        .config(&config.statsd.server)
        .registry(registry.clone())
        .max_series(config.agent.max_series_per_family)
        .start()
        .map_err(in_section("statsd"))
}

fn start_probes(
    config: &Config,
    registry: &Registry,
) -> Result<sonde_probes::RunningProber, String> {
    let targets = config.probes.to_vec();
    sonde_probes::Prober::new(registry, targets)
        .and_then(|p| p.start())
        .map_err(in_section("probes"))
}

/// Closes an agent interval: the StatsD set window closes first, which publishes each set's
/// distinct count of the whole interval in its gauge (see `Ingest::rotate_sets`), then the EMF
/// writer flushes, so its documents carry that full figure, the one every scrape and OTLP
/// export reads until the next interval closes.
fn close_interval(
    statsd: Option<&sonde_statsd::StatsdServer>,
    emf: Option<&sonde_cloudwatch::EmfWriter>,
) {
    if let Some(s) = statsd
        && !s.rotate_sets()
    {
        warn!(
            "the StatsD parser did not close the set window within 5 s; sets keep the previous interval's figure"
        );
    }
    if let Some(w) = emf
        && let Err(e) = w.write_now()
    {
        warn!("{e}");
    }
}

/// One thread for the periodic work that has no thread of its own: host and procstat
/// collection, StatsD set rotation, EMF flushes. It lives as long as the agent; reloads swap
/// what it works on.
fn start_ticker(tick: Arc<Mutex<Tick>>) -> Result<(Sender<TickMsg>, JoinHandle<()>), String> {
    let (tx, rx): (Sender<TickMsg>, Receiver<TickMsg>) = channel();
    let thread = std::thread::Builder::new()
        .name("sonde-agent-tick".into())
        .spawn(move || {
            let (host_every, agent_every) = {
                let t = lock(&tick);
                (t.host_every, t.agent_every)
            };
            let mut next_host = Instant::now();
            let mut next_agent = Instant::now() + agent_every;
            let (mut host_every, mut agent_every) = (host_every, agent_every);
            loop {
                let now = Instant::now();
                if now >= next_host {
                    let t = lock(&tick);
                    if let Some(h) = &t.host {
                        h.collect();
                    }
                    if let Some(p) = &t.procstat {
                        p.collect();
                    }
                    if let Some(c) = &t.cgroups {
                        c.collect();
                    }
                    next_host = now + host_every;
                }
                if now >= next_agent {
                    // Under the lock, so a reload never finds the server still held here.
                    let t = lock(&tick);
                    close_interval(t.statsd.as_deref(), t.emf.as_deref());
                    drop(t);
                    next_agent = now + agent_every;
                }
                let wait = next_host
                    .min(next_agent)
                    .saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(TickMsg::Wake) => {
                        // New parts collect now; shorter intervals apply from now.
                        let t = lock(&tick);
                        (host_every, agent_every) = (t.host_every, t.agent_every);
                        let now = Instant::now();
                        next_host = now;
                        next_agent = next_agent.min(now + agent_every);
                    }
                    Ok(TickMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        })
        .map_err(|e| format!("cannot start the agent's timer thread: {e}"))?;
    Ok((tx, thread))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The value of metric `name` in each EMF document of `path`, in order.
    fn emf_values(path: &std::path::Path, name: &str) -> Vec<f64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let doc: serde_json::Value = serde_json::from_str(l).unwrap();
                doc.get(name).map(|v| v.as_f64().unwrap())
            })
            .collect()
    }

    /// Issue #21 item 7: EMF documents carried 0 for every set, and scrapes a partial count.
    #[test]
    fn a_set_reads_the_same_full_window_in_a_scrape_and_in_emf() {
        let dir = std::env::temp_dir().join(format!(
            "sonde-agent-sets-{}-{}",
            std::process::id(),
            sonde_core::unix_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("emf.log");
        let registry = Registry::new();
        let statsd = sonde_statsd::StatsdServer::builder()
            .udp("127.0.0.1:0")
            .registry(registry.clone())
            .start()
            .unwrap();
        let emf = sonde_cloudwatch::EmfBuilder::new("sonde-test")
            .registry(registry.clone())
            .destination(sonde_cloudwatch::Destination::File(path.clone()))
            .build()
            .unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = statsd.local_addr().unwrap();
        let users = |snap: &sonde_core::Snapshot| {
            snap.point("shop.users", &[])
                .unwrap()
                .number()
                .unwrap()
                .as_f64()
        };
        let mut scraped = Vec::new();
        for members in [&["a", "b", "a", "c"][..], &["b", "d"], &["e"]] {
            for m in members {
                sock.send_to(format!("shop.users:{m}|s").as_bytes(), addr)
                    .unwrap();
            }
            statsd.flush(Duration::from_secs(5)).unwrap();
            // Mid-window, a scrape reads the previous window, whole.
            let before = users(&registry.snapshot());
            assert_eq!(Some(&before), scraped.last().or(Some(&0.0)));
            close_interval(Some(&statsd), Some(&emf));
            scraped.push(users(&registry.snapshot()));
        }
        assert_eq!(scraped, [3.0, 2.0, 1.0]);
        assert_eq!(emf_values(&path, "shop.users"), scraped);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
