//! Starting, reloading and stopping the agent's components around one registry, so a reload
//! (SIGHUP) keeps every series.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use sonde_core::{Registry, Resource, Temporality};
use tracing::{error, info, warn};

use crate::config::{Config, ProbeSection, ProcstatSection};

/// Runs until SIGTERM or SIGINT.
pub fn run(config: Config, path: Option<String>) -> Result<(), String> {
    let registry = Registry::with_max_series(config.agent.max_series_per_family);
    let telemetry = AgentTelemetry::register(&registry);
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // The agent's own process, once for the agent's lifetime (its series survive reloads).
    let own = if config.own_process {
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
                        running.stop(config.agent.shutdown_timeout);
                        match Running::start(&new, &registry) {
                            Ok(r) => {
                                running = r;
                                config = new;
                                telemetry.reload(true);
                                info!("configuration reloaded");
                            }
                            Err(e) => {
                                telemetry.reload(false);
                                error!(
                                    "the new configuration failed to start ({e}); restarting the previous one"
                                );
                                running = Running::start(&config, &registry)?;
                            }
                        }
                    }
                }
            }
            SIGTERM | SIGINT => {
                info!("shutting down: delivering the last interval");
                let ok = running.stop(config.agent.shutdown_timeout);
                drop(own);
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

/// What a configuration started.
struct Running {
    prometheus: Option<sonde_prometheus::PrometheusServer>,
    otlp: Option<sonde_otlp::OtlpMetricsExporter>,
    cloudwatch: Option<sonde_cloudwatch::CloudWatchExporter>,
    emf: Option<Arc<sonde_cloudwatch::EmfWriter>>,
    remote_write: Option<sonde_prometheus::RemoteWriter>,
    statsd: Option<Arc<sonde_statsd::StatsdServer>>,
    prober: Option<sonde_probes::RunningProber>,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
}

fn resource(config: &Config) -> Resource {
    let mut r = Resource::detect();
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

impl Running {
    fn start(config: &Config, registry: &Registry) -> Result<Running, String> {
        let resource = resource(config);
        let mut r = Running {
            prometheus: None,
            otlp: None,
            cloudwatch: None,
            emf: None,
            remote_write: None,
            statsd: None,
            prober: None,
            ticker: None,
        };
        // Anything that fails to start stops what already started.
        if let Err(e) = r.start_all(config, registry, &resource) {
            r.stop(Duration::from_secs(2));
            return Err(e);
        }
        Ok(r)
    }

    fn start_all(
        &mut self,
        config: &Config,
        registry: &Registry,
        resource: &Resource,
    ) -> Result<(), String> {
        if let Some(p) = &config.prometheus {
            let mut builder = sonde_prometheus::PrometheusBuilder::new()
                .registry(registry.clone())
                .resource(resource.clone())
                .bind(p.listen);
            if let Some((cert, key)) = &p.tls {
                builder = builder.tls(cert, key);
            }
            for (user, hash) in &p.basic_auth_users {
                builder = builder.basic_auth_user(user, hash);
            }
            let server = builder
                .install()
                .map_err(|e| match e {
                    // The library's message names its own settings; the agent's user has `listen`.
                    sonde_prometheus::Error::Bind { addr, source } => format!(
                        "[exporters.prometheus] listen = \"{addr}\": cannot listen: {source}; set another address with `listen` in [exporters.prometheus] or SONDE_EXPORTERS_PROMETHEUS_LISTEN (is another sonde-agent already running there?)"
                    ),
                    other => format!("[exporters.prometheus]: {other}"),
                })?;
            self.prometheus = Some(server);
        }
        if let Some(o) = &config.otlp {
            let mut transport = sonde_otlp::OtlpTransport::new();
            if let Some(e) = &o.endpoint {
                transport = transport.endpoint(e.clone());
            }
            match o.protocol.as_deref() {
                Some("grpc") => transport = transport.protocol(sonde_otlp::Protocol::Grpc),
                Some("http/protobuf") => {
                    transport = transport.protocol(sonde_otlp::Protocol::HttpProtobuf)
                }
                _ => {}
            }
            match o.compression.as_deref() {
                Some("gzip") => transport = transport.compression(sonde_otlp::Compression::Gzip),
                Some("none") => transport = transport.compression(sonde_otlp::Compression::None),
                _ => {}
            }
            for (k, v) in &o.headers {
                transport = transport.header(k.clone(), v.clone());
            }
            if let Some(t) = o.timeout {
                transport = transport.timeout(t);
            }
            let mut b = sonde_otlp::OtlpMetricsBuilder::new()
                .registry(registry.clone())
                .resource(resource.clone())
                .transport(transport)
                .interval(o.interval);
            match o.temporality.as_deref() {
                Some("delta") => b = b.temporality(Temporality::Delta),
                Some("cumulative") => b = b.temporality(Temporality::Cumulative),
                _ => {}
            }
            self.otlp = Some(b.install().map_err(|e| format!("[exporters.otlp]: {e}"))?);
        }
        if let Some(c) = &config.cloudwatch {
            let mut b = sonde_cloudwatch::CloudWatchBuilder::new(c.namespace.clone())
                .registry(registry.clone())
                .resource(resource.clone())
                .interval(c.interval)
                .high_resolution(c.high_resolution);
            if let Some(r) = &c.region {
                b = b.region(r.clone());
            }
            if let Some(u) = &c.endpoint_url {
                b = b.endpoint_url(u.clone());
            }
            self.cloudwatch = Some(
                b.install()
                    .map_err(|e| format!("[exporters.cloudwatch]: {e}"))?,
            );
        }
        if let Some(e) = &config.emf {
            let destination = sonde_cloudwatch::Destination::parse(&e.destination)
                .map_err(|err| format!("[exporters.emf]: {err}"))?;
            let w = sonde_cloudwatch::EmfBuilder::new(e.namespace.clone())
                .registry(registry.clone())
                .resource(resource.clone())
                .destination(destination)
                .build()
                .map_err(|err| format!("[exporters.emf]: {err}"))?;
            self.emf = Some(Arc::new(w));
        }
        if let Some(rw) = &config.remote_write {
            let w = sonde_prometheus::RemoteWriteBuilder::new(rw.url.clone())
                .registry(registry.clone())
                .resource(resource.clone())
                .interval(rw.interval)
                .install()
                .map_err(|e| format!("[exporters.remote_write]: {e}"))?;
            self.remote_write = Some(w);
        }
        if config.statsd.enabled && (config.statsd.udp.is_some() || config.statsd.unix.is_some()) {
            self.statsd = Some(Arc::new(start_statsd(config, registry)?));
        }
        if !config.probes.is_empty() {
            self.prober = Some(start_probes(config, registry)?);
        }
        self.ticker = Some(start_ticker(
            config,
            registry,
            self.emf.clone(),
            self.statsd.clone(),
        )?);
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
    /// whether everything was delivered.
    fn stop(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut ok = true;
        if let Some(p) = self.prober.take() {
            p.shutdown();
        }
        // The ticker holds a reference to the StatsD server: stop it first.
        if let Some((stop, t)) = self.ticker.take() {
            let _ = stop.send(());
            let _ = t.join();
        }
        // Whatever StatsD already received is recorded before the last export, and the open set
        // window is published (a shorter last interval, rather than lost).
        if let Some(s) = self.statsd.take() {
            s.flush();
            s.rotate_sets();
            match Arc::try_unwrap(s) {
                Ok(mut s) => s.shutdown(),
                Err(s) => drop(s),
            }
        }
        let left = || deadline.saturating_duration_since(Instant::now());
        // Push exporters shut down in parallel, each within the remaining time.
        std::thread::scope(|s| {
            let mut jobs: Vec<std::thread::ScopedJoinHandle<'_, Result<(), String>>> = Vec::new();
            if let Some(o) = self.otlp.take() {
                let t = left();
                jobs.push(s.spawn(move || o.shutdown(t).map_err(|e| format!("otlp: {e}"))));
            }
            if let Some(c) = self.cloudwatch.take() {
                let t = left();
                jobs.push(s.spawn(move || c.shutdown(t).map_err(|e| format!("cloudwatch: {e}"))));
            }
            if let Some(w) = self.remote_write.take() {
                let t = left();
                jobs.push(s.spawn(move || w.shutdown(t).map_err(|e| format!("remote write: {e}"))));
            }
            if let Some(w) = self.emf.take() {
                jobs.push(s.spawn(move || w.flush().map(|_| ()).map_err(|e| format!("emf: {e}"))));
            }
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
        });
        if let Some(p) = self.prometheus.take() {
            p.shutdown();
        }
        ok
    }
}

fn start_statsd(
    config: &Config,
    registry: &Registry,
) -> Result<sonde_statsd::StatsdServer, String> {
    let s = &config.statsd;
    let rules: Vec<sonde_statsd::MappingRule> = s
        .mappings
        .iter()
        .map(|m| sonde_statsd::MappingRule {
            pattern: m.pattern.clone(),
            name: m.name.clone(),
            labels: m.labels.clone(),
            drop: m.drop,
        })
        .collect();
    let mut b = sonde_statsd::StatsdServer::builder()
        .registry(registry.clone())
        .receive_buffer(s.receive_buffer)
        .queue(s.queue)
        .max_metrics(s.max_metrics)
        .max_series(config.agent.max_series_per_family)
        .mapping(rules);
    if let Some(a) = s.udp {
        b = b.udp(a.to_string());
    }
    if let Some(p) = &s.unix {
        b = b.unix(p.clone());
    }
    b.start().map_err(|e| format!("[statsd]: {e}"))
}

fn start_probes(
    config: &Config,
    registry: &Registry,
) -> Result<sonde_probes::RunningProber, String> {
    let targets = config
        .probes
        .iter()
        .map(|p| match p {
            ProbeSection::Http {
                name,
                url,
                expect_status,
                interval,
                timeout,
                ca_certificate,
            } => sonde_probes::ProbeTarget::Http(sonde_probes::HttpProbe {
                name: name.clone(),
                url: url.clone(),
                method: "GET".into(),
                expect_status: expect_status.clone(),
                timeout: *timeout,
                interval: *interval,
                headers: Vec::new(),
                ca_certificate: ca_certificate.clone(),
                insecure_skip_verify: false,
            }),
            ProbeSection::Tcp {
                name,
                address,
                interval,
                timeout,
            } => sonde_probes::ProbeTarget::Tcp(sonde_probes::TcpProbe {
                name: name.clone(),
                address: address.clone(),
                timeout: *timeout,
                interval: *interval,
            }),
        })
        .collect();
    sonde_probes::Prober::new(registry, targets)
        .and_then(|p| p.start())
        .map_err(|e| format!("[probes]: {e}"))
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
        && let Err(e) = w.flush()
    {
        warn!("{e}");
    }
}

/// One thread for the periodic work that has no thread of its own: host and procstat
/// collection, StatsD set rotation, EMF flushes.
fn start_ticker(
    config: &Config,
    registry: &Registry,
    emf: Option<Arc<sonde_cloudwatch::EmfWriter>>,
    statsd: Option<Arc<sonde_statsd::StatsdServer>>,
) -> Result<(Sender<()>, JoinHandle<()>), String> {
    let host = if config.host.enabled {
        Some(
            sonde_host::HostCollector::new()
                .registry(registry)
                .per_cpu(config.host.per_cpu)
                .install()
                .map_err(|e| format!("[collectors.host]: {e}"))?,
        )
    } else {
        None
    };
    // One collector for every matcher, so the process list is read once per collection.
    let mut matchers = config.procstat.iter().map(|p| match p {
        ProcstatSection::Name(n) => sonde_host::ProcessMatcher::Name(n.clone()),
        ProcstatSection::Pattern(p) => sonde_host::ProcessMatcher::Pattern(p.clone()),
        ProcstatSection::PidFile(f) => sonde_host::ProcessMatcher::PidFile(f.clone()),
    });
    let mut procstat = Vec::new();
    if let Some(first) = matchers.next() {
        let mut b = sonde_host::ProcstatCollector::new(first).registry(registry);
        for m in matchers {
            b = b.matcher(m);
        }
        procstat.push(
            b.install()
                .map_err(|e| format!("[collectors.procstat]: {e}"))?,
        );
    }
    let host_every = config.host.interval;
    let agent_every = config.agent.interval;
    let (stop_tx, stop_rx): (Sender<()>, Receiver<()>) = channel();
    let thread = std::thread::Builder::new()
        .name("sonde-agent-tick".into())
        .spawn(move || {
            let mut next_host = Instant::now();
            let mut next_agent = Instant::now() + agent_every;
            loop {
                let now = Instant::now();
                if now >= next_host {
                    if let Some(h) = &host {
                        h.collect();
                    }
                    for p in &procstat {
                        p.collect();
                    }
                    next_host = now + host_every;
                }
                if now >= next_agent {
                    close_interval(statsd.as_deref(), emf.as_deref());
                    next_agent = now + agent_every;
                }
                let wait = next_host
                    .min(next_agent)
                    .saturating_duration_since(Instant::now());
                match stop_rx.recv_timeout(wait) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                        // On purpose: the series stay for the next configuration's collectors.
                        for p in &procstat {
                            p.shutdown();
                        }
                        if let Some(h) = &host {
                            h.shutdown();
                        }
                        return;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        })
        .map_err(|e| format!("cannot start the agent's timer thread: {e}"))?;
    Ok((stop_tx, thread))
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
            assert!(statsd.flush());
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
