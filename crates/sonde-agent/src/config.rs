//! The agent's configuration: one TOML file, `SONDE_*` environment overrides, embedded defaults.
//!
//! Every error is collected (not just the first) with its location (`file:line:column`, or the
//! environment variable) and a hint; unknown keys are errors, with the closest known key
//! suggested.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use sonde_core::diag::{location, shorten};
use sonde_settings::Settings;
use sonde_settings::toml::Entry;
use toml_edit::{Document, Item, Table, Value};

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../sonde-agent.toml");

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// `file:line:column`, or `environment variable NAME`.
    pub location: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// All the problems found.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[agent]`: the agent's own settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// How often sets rotate and the EMF writer flushes.
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `sonde_agent=debug,info`...).
    pub log_level: String,
    /// How long SIGTERM waits for the push exporters to deliver.
    #[serde(with = "sonde_settings::duration")]
    pub shutdown_timeout: Duration,
    /// Most series per metric family.
    pub max_series_per_family: usize,
    /// Estimated bytes all series together may take (the registry's memory budget).
    #[serde(with = "sonde_settings::size")]
    pub memory_budget: usize,
    /// `host_root`: the host's `/` mounted there, for an agent in a container (read into
    /// [`HostSection::view`]).
    pub host_root: Option<PathBuf>,
    /// `resource_detectors`: cloud environments looked for at start (`ec2`, `ecs`).
    pub resource_detectors: Vec<String>,
    /// `resource_detection_timeout`: how long each detector may take.
    #[serde(with = "sonde_settings::duration")]
    pub resource_detection_timeout: Duration,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            interval: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_timeout: Duration::from_secs(10),
            max_series_per_family: 2000,
            memory_budget: 256 << 20,
            host_root: None,
            resource_detectors: Vec::new(),
            resource_detection_timeout: Duration::from_secs(1),
        }
    }
}

impl Settings for AgentSection {
    fn expect(key: &str) -> Option<sonde_settings::Expect> {
        use sonde_settings::Expect;
        Some(match key {
            "interval" => Expect::interval(Duration::from_secs(10)),
            "shutdown_timeout" => Expect::duration(TIMEOUT_RANGE, Duration::from_secs(10)),
            "max_series_per_family" => Expect::count(1..=1_000_000, 2000),
            // Below 1 MiB the agent's own series would not fit.
            "memory_budget" => Expect::size(1 << 20..=1 << 40, 256 << 20),
            // Start-up never waits longer than this for a detector.
            "resource_detection_timeout" => Expect::duration(
                Duration::from_millis(10)..=Duration::from_secs(10),
                Duration::from_secs(1),
            ),
            "log_format" => Expect::OneOf(&["text", "json"]),
            _ => return None,
        })
    }

    fn validate(&self) -> Vec<sonde_settings::Problem> {
        use sonde_settings::Problem;
        let mut problems: Vec<Problem> = [
            Self::within("interval", self.interval),
            Self::within("shutdown_timeout", self.shutdown_timeout),
            Self::within("max_series_per_family", self.max_series_per_family),
            Self::within("memory_budget", self.memory_budget),
            Self::within(
                "resource_detection_timeout",
                self.resource_detection_timeout,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Start-up would otherwise fall back to "info" without a word.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            problems.push(Problem::new(
                "log_level",
                format!("`{}` is not a log filter: {e}", self.log_level),
                "use a level (error, warn, info, debug, trace) or directives like \"sonde_agent=debug,info\"",
            ));
        }
        for n in &self.resource_detectors {
            if crate::detect::Detector::parse(n).is_none() {
                problems.push(Problem::new(
                    "resource_detectors",
                    format!("unknown resource detector `{n}`"),
                    format!("use some of {:?}", crate::detect::DETECTOR_NAMES),
                ));
            }
        }
        problems
    }
}

/// `[collectors.host]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSection {
    /// Whether host metrics are collected.
    pub enabled: bool,
    /// The collector's own settings (interval, per-core CPU).
    pub config: sonde_host::HostConfig,
    /// Whose host is read: this one's (`/proc`), or the one mounted elsewhere (`[agent]
    /// host_root`, or the `HOST_PROC`/`HOST_SYS` variables), for an agent in a container.
    pub view: HostView,
}

/// `[collectors.cgroups]`: container and cgroup metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupsSection {
    /// Whether cgroups are read (default false).
    pub enabled: bool,
    /// The collector's own settings (include, containers, max_cgroups, root).
    pub config: sonde_host::CgroupsConfig,
    /// The cgroup filesystem when `root` is not set: `/sys/fs/cgroup` under the host root.
    pub default_root: PathBuf,
}

/// Where the host collector reads the host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostView {
    /// `/proc`, `/sys` and the agent's own mounts.
    Own,
    /// `[agent] host_root` (or `HOST_ROOT`): the host's `/` mounted there.
    Root(PathBuf),
    /// `HOST_PROC` and `HOST_SYS` (gopsutil's and the Collector's variables).
    ProcSys(PathBuf, PathBuf),
}

/// `[statsd]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdSection {
    /// Whether StatsD is received.
    pub enabled: bool,
    /// The rest of the section: the server's own settings.
    pub server: sonde_statsd::StatsdConfig,
}

/// `[sources.otlp]`: services push OTLP metrics to the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpInSection {
    /// The receiver's own settings (listeners, request limit, token, TLS).
    pub config: sonde_otlp_receiver::OtlpReceiverConfig,
    /// Resource attributes kept in each sender's `target_info` series (`[sources]
    /// target_info_attributes`, shared with the scrape targets).
    pub target_info_attributes: Vec<String>,
}

/// A push exporter's section: the exporter's own settings, what it sends and its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSection<C> {
    /// The exporter's own settings.
    pub config: C,
    /// `select`: which metrics it sends.
    pub select: sonde_core::Selection,
    /// `queue_dir` (with `queue_max_size`, `queue_fsync`): a durable queue on disk.
    pub queue: Option<sonde_push::DiskQueueConfig>,
}

/// `[exporters.otlp]` (`select` default: everything).
pub type OtlpSection = PushSection<sonde_otlp::OtlpExporterConfig>;
/// `[exporters.cloudwatch]` (`select` default: [`crate::select::cloudwatch_default_for`]).
pub type CloudWatchSection = PushSection<sonde_cloudwatch::CloudWatchConfig>;
/// `[exporters.remote_write]` (`select` default: everything).
pub type RemoteWriteSection = PushSection<sonde_prometheus::RemoteWriteConfig>;

/// `[exporters.emf]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmfSection {
    /// The writer's own settings (namespace, destination).
    pub config: sonde_cloudwatch::EmfConfig,
    /// `select`: which metrics it writes (default: everything).
    pub select: sonde_core::Selection,
}

impl RemoteWriteSection {
    /// The writer this section starts (also what `check-config` checks, so what passes starts).
    pub fn builder(
        &self,
        registry: &sonde_core::Registry,
        resource: &sonde_core::Resource,
    ) -> sonde_prometheus::RemoteWriteBuilder {
        let b = self
            .config
            .builder()
            .registry(registry.clone())
            .resource(resource.clone())
            .selection(self.select.clone());
        match &self.queue {
            Some(q) => b.durable_queue(q.clone()),
            None => b,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[agent]`.
    pub agent: AgentSection,
    /// `[resource]`: attributes of every metric's resource.
    pub resource: Vec<(String, String)>,
    /// `[collectors.host]`.
    pub host: HostSection,
    /// `[collectors.cgroups]`.
    pub cgroups: CgroupsSection,
    /// `[collectors.process]`: the agent's own process metrics.
    pub own_process: bool,
    /// `[collectors.process] prometheus_names`: also the Prometheus client libraries' names
    /// (`process_cpu_seconds_total`, `process_open_fds`...), next to the OpenTelemetry ones.
    pub process_prometheus_names: bool,
    /// `[[collectors.procstat]]`.
    /// (`name = "nginx"`, `pattern = "^postgres"` or `pid_file = "/run/app.pid"`), checked by
    /// sonde-host here: the pattern compiled here is the one start-up runs.
    pub procstat: Vec<sonde_host::CheckedMatcher>,
    /// `[statsd]`.
    pub statsd: StatsdSection,
    /// `[[probes.http]]`, `[[probes.tcp]]`.
    pub probes: Vec<sonde_probes::ProbeTarget>,
    /// `[[sources.scrape]]`: Prometheus and OpenMetrics endpoints mirrored into the registry.
    pub scrape: Vec<sonde_scrape::Target>,
    /// `[sources.otlp]`: the OTLP receiver, if enabled.
    pub otlp_in: Option<OtlpInSection>,
    /// `[exporters.prometheus]`.
    pub prometheus: Option<sonde_prometheus::PrometheusServerConfig>,
    /// `[exporters.otlp]`.
    pub otlp: Option<OtlpSection>,
    /// `[exporters.cloudwatch]`.
    pub cloudwatch: Option<CloudWatchSection>,
    /// `[exporters.emf]`.
    pub emf: Option<EmfSection>,
    /// `[exporters.remote_write]`.
    pub remote_write: Option<RemoteWriteSection>,
}

impl Config {
    /// Parses `text` (named `origin` in messages) with overrides from `env`.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
        env_names: &[String],
    ) -> Result<Config, ConfigErrors> {
        let doc = match Document::parse(text.to_string()) {
            Ok(d) => d,
            Err(e) => {
                let at = e.span().map(|s| s.start).unwrap_or(0);
                return Err(ConfigErrors(vec![ConfigError {
                    location: location(origin, text, at),
                    message: format!("this is not valid TOML: {}", e.message()),
                    hint: "check quotes, brackets and `key = value` syntax".into(),
                }]));
            }
        };
        let mut r = Reader {
            text,
            origin,
            env,
            errors: Vec::new(),
            env_used: Vec::new(),
            queue_dirs: Vec::new(),
            off_sections: Vec::new(),
            known_env: Vec::new(),
        };
        let root = doc.as_table();
        let config = r.config(root);
        // SONDE_* variables that override nothing are mistakes too.
        for name in env_names {
            if name.starts_with("SONDE_") && !r.env_used.contains(name) {
                // The keys of the off section this variable names, if any.
                let off = r.off_sections.iter().find_map(|section| {
                    let keys = r.known_env.iter().find(|(p, _)| p == section)?;
                    let prefix = env_name(&section.split('.').collect::<Vec<_>>());
                    let rest = name.strip_prefix(prefix.as_str())?;
                    rest.starts_with('_').then_some((section, prefix, &keys.1))
                });
                if let Some((section, prefix, keys)) = &off
                    && keys.contains(name)
                {
                    r.errors.push(ConfigError {
                        location: shorten(&format!("environment variable {name}"), 200),
                        message: format!("[{section}] is off, so this setting is not read"),
                        hint: format!(
                            "turn the section on with enabled = true in [{section}] (or {prefix}_ENABLED=true), or remove the variable"
                        ),
                    });
                    continue;
                }
                // A misspelt setting of an off section is offered that section's names too.
                let mut names = r.env_used.clone();
                if let Some((_, _, keys)) = off {
                    names.extend(keys.iter().cloned());
                }
                let suggestion = sonde_core::diag::closest(name, &names);
                r.errors.push(ConfigError {
                    location: shorten(&format!("environment variable {name}"), 200),
                    message: "no setting has this name".into(),
                    hint: match suggestion {
                        Some(s) => format!("did you mean {s}?"),
                        None => {
                            "remove it; see `sonde-agent print-default-config` for the settings"
                                .into()
                        }
                    },
                });
            }
        }
        if r.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(r.errors))
        }
    }
}

// The range of every numeric setting, checked by `check-config` so that what it accepts also
// starts (documented in sonde-agent.toml and examples-config/full.toml).

/// `agent.shutdown_timeout`.
pub const TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(3600);

/// `problem` of entry `i` of the list `list`, keyed to that entry.
fn in_entry(list: &str, i: usize, mut problem: sonde_settings::Problem) -> sonde_settings::Problem {
    problem.key = match problem.key.as_str() {
        "" => format!("{list}.{i}"),
        key => format!("{list}.{i}.{key}"),
    };
    problem
}

/// `[[collectors.procstat]]`, each entry checked by sonde-host where it stands.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Procstat {
    procstat: Vec<sonde_host::ProcstatConfig>,
}

impl Settings for Procstat {
    fn expect(_key: &str) -> Option<sonde_settings::Expect> {
        None
    }

    fn validate(&self) -> Vec<sonde_settings::Problem> {
        let matchers = self
            .procstat
            .iter()
            .map(sonde_host::ProcstatConfig::matcher);
        matchers
            .enumerate()
            .filter_map(|(i, m)| m.err().map(|p| in_entry("procstat", i, p)))
            .collect()
    }
}

/// `[[sources.scrape]]`, each target checked by sonde-scrape where it stands, and none twice.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Scrape {
    scrape: Vec<sonde_scrape::ScrapeTargetConfig>,
}

impl Settings for Scrape {
    fn expect(key: &str) -> Option<sonde_settings::Expect> {
        key.strip_prefix("scrape.")
            .and_then(sonde_scrape::ScrapeTargetConfig::expect)
    }

    fn validate(&self) -> Vec<sonde_settings::Problem> {
        let mut problems = Vec::new();
        for (i, t) in self.scrape.iter().enumerate() {
            problems.extend(t.validate().into_iter().map(|p| in_entry("scrape", i, p)));
            if self.scrape[..i]
                .iter()
                .any(|o| o.job == t.job && o.url == t.url)
            {
                problems.push(in_entry(
                    "scrape",
                    i,
                    sonde_settings::Problem::new(
                        "url",
                        format!(
                            "the target `{}` at {} is listed twice",
                            t.job,
                            sonde_push::redact_url(&t.url)
                        ),
                        "remove one of the two entries",
                    ),
                ));
            }
        }
        problems
    }
}

/// A scalar read from the file or the environment.
enum Raw<'a> {
    File(&'a Value),
    Env(String),
}

struct Reader<'a> {
    text: &'a str,
    origin: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    env_used: Vec<String>,
    /// Durable queue directories seen, with their exporter.
    queue_dirs: Vec<(PathBuf, &'static str)>,
    /// Sections turned off (`exporters.otlp`).
    off_sections: Vec<String>,
    /// The environment names of each section's keys, by section path.
    known_env: Vec<(String, Vec<String>)>,
}

fn env_name(path: &[&str]) -> String {
    format!("SONDE_{}", path.join("_").to_ascii_uppercase())
}

impl<'a> Reader<'a> {
    fn at(&self, span: Option<std::ops::Range<usize>>) -> String {
        location(self.origin, self.text, span.map(|s| s.start).unwrap_or(0))
    }

    fn error(&mut self, location: String, message: String, hint: impl Into<String>) {
        // A message that quotes a value (a detector's name, a URL) never repeats a megabyte.
        self.errors.push(ConfigError {
            location: shorten(&location, 200),
            message: shorten(&message, 512),
            hint: hint.into(),
        });
    }

    /// Reports the setting at `path` holding something of the wrong shape: it must be `what`.
    fn must_be(&mut self, location: String, path: &[&str], what: &str, hint: impl Into<String>) {
        self.error(
            location,
            format!("`{}` must be {what}", path.join(".")),
            hint,
        );
    }

    /// Reports keys of `table` not in `known`.
    fn unknown_keys(&mut self, table: Option<&Table>, path: &str, known: &[&str]) {
        // The environment names of a section that turns out to be off (see `section_on`).
        let section: Vec<&str> = path.split('.').collect();
        self.known_env.push((
            path.to_owned(),
            known
                .iter()
                .map(|k| env_name(&[section.as_slice(), &[*k]].concat()))
                .collect(),
        ));
        let Some(table) = table else {
            return;
        };
        let what = format!("[{path}]");
        for (key, _) in table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = table.key(key).and_then(|k| k.span());
            let (message, hint) = sonde_core::diag::unknown_key(key, known, Some(&what));
            self.error(self.at(span), message, hint);
        }
    }

    /// The section at `path` read into its component's settings `T` (see [`Self::part`]);
    /// other keys are unknown, but for the agent's own `extra` keys.
    fn settings<T: Settings>(&mut self, table: Option<&Table>, path: &[&str], extra: &[&str]) -> T {
        let known: Vec<&str> = sonde_settings::keys::<T>()
            .iter()
            .chain(extra)
            .copied()
            .collect();
        self.unknown_keys(table, &path.join("."), &known);
        self.part(table, path)
    }

    /// `T`'s keys of the section at `path`, each from its SONDE_* variable or the file, read
    /// into `T`: every mistake, and every problem `T::validate` finds, reported at its place.
    fn part<T: Settings>(&mut self, table: Option<&Table>, path: &[&str]) -> T {
        let mut entries = Vec::new();
        for key in sonde_settings::keys::<T>() {
            let name = env_name(&[path, &[*key]].concat());
            if !self.env_used.contains(&name) {
                self.env_used.push(name.clone());
            }
            if let Some(v) = (self.env)(&name) {
                entries.push((key.to_string(), Entry::Env(v)));
            } else if let Some(item) = table.and_then(|t| t.get(key)) {
                entries.push((key.to_string(), Entry::File(item.clone())));
            }
        }
        let (value, mistakes) = sonde_settings::toml::read::<T>(entries);
        for m in mistakes {
            let full: Vec<&str> = path
                .iter()
                .copied()
                .chain(m.problem.key.split('.').filter(|k| !k.is_empty()))
                .collect();
            let loc = match m.span {
                Some(span) => self.at(Some(span)),
                None => self.location_in(table, path.len(), &full),
            };
            // An entry of a list is told in the list's name (`[collectors.procstat]`), and a
            // key of the entry by its own name.
            let keys: Vec<&str> = m.problem.key.split('.').collect();
            let entry = match keys.as_slice() {
                [list, index, rest @ ..] if index.parse::<usize>().is_ok() => {
                    Some((format!("{}.{list}", path.join(".")), rest.join(".")))
                }
                _ => None,
            };
            let message = match (&entry, m.problem.names_key) {
                (Some((list, key)), true) if !key.is_empty() => {
                    format!("[{list}] {}", m.problem.message_for(key))
                }
                (Some((list, _)), _) => format!("[{list}] {}", m.problem.message),
                (None, true) => m.problem.message_for(&full.join(".")),
                (None, false) => format!("[{}] {}", path.join("."), m.problem.message),
            };
            self.error(loc, message, m.problem.hint);
        }
        value
    }

    /// Where the setting at `path` is (its first `depth` names being `table`'s section): its
    /// environment variable if set, else the deepest item of the file it names
    /// (`statsd.mappings.2`: the third mapping), else the section.
    fn location_in(&self, table: Option<&Table>, depth: usize, path: &[&str]) -> String {
        if path.len() == depth + 1 {
            let name = env_name(path);
            if (self.env)(&name).is_some() {
                return format!("environment variable {name}");
            }
        }
        /// A table (a section, an entry of `[[list]]`) or an item.
        #[derive(Clone, Copy)]
        enum Node<'t> {
            Table(&'t Table),
            Item(&'t Item),
        }
        let mut span = table.and_then(|t| t.span());
        let mut node = table.map(Node::Table);
        for key in &path[depth.min(path.len())..] {
            let next = match node {
                Some(Node::Table(t)) => t.get(key).map(Node::Item),
                Some(Node::Item(Item::ArrayOfTables(a))) => key
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| a.get(n))
                    .map(Node::Table),
                Some(Node::Item(item)) => match key.parse::<usize>() {
                    Ok(n) => item.get(n),
                    Err(_) => item.get(*key),
                }
                .map(Node::Item),
                None => None,
            };
            let Some(next) = next else { break };
            span = match next {
                Node::Table(t) => t.span(),
                Node::Item(i) => i.span(),
            }
            .or(span);
            node = Some(next);
        }
        self.at(span)
    }

    fn sub<'t>(&mut self, table: Option<&'t Table>, key: &str, path: &str) -> Option<&'t Table> {
        let item = table?.get(key)?;
        match item {
            Item::Table(t) => Some(t),
            other => {
                self.must_be(
                    self.at(other.span()),
                    &[path],
                    "a table",
                    format!("write it as a [{path}] section"),
                );
                None
            }
        }
    }

    /// The raw value at `path` (last element in `table`), the environment winning.
    fn raw<'t>(&mut self, table: Option<&'t Table>, path: &[&str]) -> Option<(Raw<'t>, String)> {
        let name = env_name(path);
        if !self.env_used.contains(&name) {
            self.env_used.push(name.clone());
        }
        if let Some(v) = (self.env)(&name) {
            return Some((Raw::Env(v), format!("environment variable {name}")));
        }
        let key = path.last()?;
        let item = table?.get(key)?;
        match item {
            Item::Value(v) => {
                let loc = self.at(v.span());
                Some((Raw::File(v), loc))
            }
            other => {
                let loc = self.at(other.span());
                self.must_be(
                    loc,
                    path,
                    "a value, not a table",
                    "write it as `key = value` in its section",
                );
                None
            }
        }
    }

    /// An array of strings (from the environment: comma-separated).
    fn strings(&mut self, table: Option<&Table>, path: &[&str]) -> Option<Vec<String>> {
        let (items, loc) = match self.raw(table, path)? {
            (Raw::Env(s), _) => {
                return Some(
                    s.split(',')
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                        .collect(),
                );
            }
            (Raw::File(Value::Array(a)), loc) => {
                let items: Option<Vec<String>> =
                    a.iter().map(|v| v.as_str().map(str::to_owned)).collect();
                (items, loc)
            }
            // Not an array: nothing to read.
            (Raw::File(_), loc) => (None, loc),
        };
        if items.is_none() {
            self.must_be(
                loc,
                path,
                "an array of strings",
                "like [\"service.version\", \"host.name\"]",
            );
        }
        items
    }

    fn bool(&mut self, table: Option<&Table>, path: &[&str], default: bool) -> bool {
        match self.raw(table, path) {
            None => default,
            Some((Raw::File(Value::Boolean(b)), _)) => *b.value(),
            Some((Raw::Env(s), loc)) => match s.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    self.error(loc, format!("`{s}` is not a boolean"), "use true or false");
                    default
                }
            },
            Some((Raw::File(_), loc)) => {
                self.must_be(
                    loc,
                    path,
                    "true or false",
                    "write true or false, without quotes",
                );
                default
            }
        }
    }

    /// Whether the section at `path` is on (`enabled`, default `default`). An off section's
    /// other settings are not read: its environment variables are then reported as such,
    /// not as unknown.
    fn section_on(&mut self, table: Option<&Table>, path: &[&str], default: bool) -> bool {
        let mut key = path.to_vec();
        key.push("enabled");
        let on = self.bool(table, &key, default);
        if !on {
            self.off_sections.push(path.join("."));
        }
        on
    }

    /// Where the setting at `path` comes from: its environment variable if set, else its key
    /// in `table` (for checks made after the value was read).
    fn location_of(&self, table: Option<&Table>, path: &[&str]) -> String {
        let name = env_name(path);
        if (self.env)(&name).is_some() {
            return format!("environment variable {name}");
        }
        let key = path.last().copied().unwrap_or_default();
        self.at(table.and_then(|t| t.get(key)).and_then(Item::span))
    }

    fn string_table(
        &mut self,
        table: Option<&Table>,
        key: &str,
        path: &str,
    ) -> Vec<(String, String)> {
        let Some(item) = table.and_then(|t| t.get(key)) else {
            return Vec::new();
        };
        let pairs: Vec<(String, Option<String>, Option<std::ops::Range<usize>>)> = match item {
            Item::Table(t) => t
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_str().map(str::to_string), v.span()))
                .collect(),
            Item::Value(Value::InlineTable(t)) => t
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_str().map(str::to_string), v.span()))
                .collect(),
            other => {
                self.must_be(
                    self.at(other.span()),
                    &[path],
                    "a table of strings",
                    "like { \"service.name\" = \"checkout\" }",
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (k, v, span) in pairs {
            match v {
                Some(v) => out.push((k, v)),
                None => self.error(
                    self.at(span),
                    format!("the value of `{k}` in `{path}` must be a string"),
                    "put it in double quotes",
                ),
            }
        }
        out
    }

    fn config(&mut self, root: &Table) -> Config {
        self.unknown_keys(
            Some(root),
            "top level",
            &[
                "agent",
                "resource",
                "collectors",
                "statsd",
                "probes",
                "sources",
                "exporters",
            ],
        );
        let agent_table = self.sub(Some(root), "agent", "agent");
        let agent: AgentSection = self.settings(agent_table, &["agent"], &[]);
        let resource = self.string_table(Some(root), "resource", "resource");

        let collectors = self.sub(Some(root), "collectors", "collectors");
        self.unknown_keys(
            collectors,
            "collectors",
            &["host", "process", "procstat", "cgroups"],
        );
        let host = self.sub(collectors, "host", "collectors.host");
        let host = HostSection {
            enabled: self.bool(host, &["collectors", "host", "enabled"], true),
            config: self.settings(host, &["collectors", "host"], &["enabled"]),
            view: self.host_view(agent_table, agent.host_root.as_deref()),
        };
        let cgroups = self.cgroups(collectors, &host.view);
        let process = self.sub(collectors, "process", "collectors.process");
        self.unknown_keys(
            process,
            "collectors.process",
            &["enabled", "prometheus_names"],
        );
        let own_process = self.bool(process, &["collectors", "process", "enabled"], true);
        let process_prometheus_names = self.bool(
            process,
            &["collectors", "process", "prometheus_names"],
            false,
        );
        let procstat = self
            .part::<Procstat>(collectors, &["collectors"])
            .procstat
            .iter()
            .filter_map(|p| p.matcher().ok())
            .collect();

        let statsd = self.sub(Some(root), "statsd", "statsd");
        let statsd = StatsdSection {
            enabled: self.bool(statsd, &["statsd", "enabled"], true),
            server: self.settings(statsd, &["statsd"], &["enabled"]),
        };

        let probes_t = self.sub(Some(root), "probes", "probes");
        let probes = self
            .settings::<sonde_probes::ProbesConfig>(probes_t, &["probes"], &[])
            .targets();

        let mut scrape = self.scrape_targets(root);
        let scrape_jobs: Vec<String> = scrape.iter().map(|t| t.job.clone()).collect();
        let mut otlp_in = self.otlp_in(root);
        // One list for every source, so they all register the same `target_info` family.
        let sources = self.sub(Some(root), "sources", "sources");
        let info_attributes = self
            .strings(sources, &["sources", "target_info_attributes"])
            .unwrap_or_else(|| {
                sonde_core::TARGET_INFO_ATTRIBUTES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
        for t in &mut scrape {
            t.target_info_attributes = info_attributes.clone();
        }
        if let Some(o) = &mut otlp_in {
            o.target_info_attributes = info_attributes;
        }

        let exporters = self.sub(Some(root), "exporters", "exporters");
        self.unknown_keys(
            exporters,
            "exporters",
            &["prometheus", "otlp", "cloudwatch", "emf", "remote_write"],
        );
        let t = self.sub(exporters, "prometheus", "exporters.prometheus");
        let path = ["exporters", "prometheus"];
        self.unknown_keys(
            t,
            "exporters.prometheus",
            &[
                sonde_settings::keys::<sonde_prometheus::PrometheusServerConfig>(),
                &["enabled"],
            ]
            .concat(),
        );
        let prometheus = self.section_on(t, &path, true).then(|| self.part(t, &path));

        let otlp = self.push_section(exporters, "otlp", sonde_core::Selection::new);
        let cloudwatch = self.push_section(exporters, "cloudwatch", || {
            crate::select::cloudwatch_default_for(&scrape_jobs)
        });
        let t = self.sub(exporters, "emf", "exporters.emf");
        let path = ["exporters", "emf"];
        // Checked for spelling even when off.
        self.unknown_keys(
            t,
            "exporters.emf",
            &[
                sonde_settings::keys::<sonde_cloudwatch::EmfConfig>(),
                &["enabled", "select"],
            ]
            .concat(),
        );
        let emf = self.section_on(t, &path, t.is_some()).then(|| EmfSection {
            config: self.part(t, &path),
            select: self.selection(t, "exporters.emf", sonde_core::Selection::new),
        });
        let remote_write = self.push_section(exporters, "remote_write", sonde_core::Selection::new);

        Config {
            agent,
            resource,
            host,
            cgroups,
            own_process,
            process_prometheus_names,
            procstat,
            statsd,
            probes,
            scrape,
            otlp_in,
            prometheus,
            otlp,
            cloudwatch,
            emf,
            remote_write,
        }
    }

    /// `[exporters.NAME]` of a push exporter, on when the section is there (or `enabled =
    /// true`): its own settings `C`, `select` (else `default()`) and a durable queue.
    fn push_section<C: Settings>(
        &mut self,
        exporters: Option<&Table>,
        name: &'static str,
        default: impl FnOnce() -> sonde_core::Selection,
    ) -> Option<PushSection<C>> {
        let section = format!("exporters.{name}");
        let t = self.sub(exporters, name, &section);
        let path = ["exporters", name];
        self.unknown_keys(
            t,
            &section,
            &[
                sonde_settings::keys::<C>(),
                sonde_settings::keys::<sonde_push::QueueSettings>(),
                &["enabled", "select"],
            ]
            .concat(),
        );
        self.section_on(t, &path, t.is_some()).then(|| PushSection {
            config: self.part(t, &path),
            select: self.selection(t, &section, default),
            queue: self.queue(t, name),
        })
    }

    /// `select` of the exporter table `t` (at `path`), or `default()` when it has none.
    fn selection(
        &mut self,
        t: Option<&Table>,
        path: &str,
        default: impl FnOnce() -> sonde_core::Selection,
    ) -> sonde_core::Selection {
        let Some(item) = t.and_then(|t| t.get("select")) else {
            return default();
        };
        let (selection, problems) = crate::select::parse(item, path);
        for p in problems {
            let at = self.at(p.span);
            self.error(at, p.message, p.hint);
        }
        selection
    }

    /// `queue_dir`, `queue_max_size` and `queue_fsync` of `[exporters.NAME]`: a durable queue,
    /// checked as the exporter opens it, in a directory of its own.
    fn queue(
        &mut self,
        t: Option<&Table>,
        name: &'static str,
    ) -> Option<sonde_push::DiskQueueConfig> {
        let q = self
            .part::<sonde_push::QueueSettings>(t, &["exporters", name])
            .queue()?;
        if let Some(other) = self
            .queue_dirs
            .iter()
            .find(|(d, _)| *d == q.dir)
            .map(|(_, n)| *n)
        {
            let at = self.location_of(t, &["exporters", name, "queue_dir"]);
            self.error(
                at,
                format!("[exporters.{name}] queue_dir is also [exporters.{other}]'s"),
                "give each exporter a directory of its own",
            );
        }
        self.queue_dirs.push((q.dir.clone(), name));
        Some(q)
    }

    /// `[collectors.cgroups]`, its root under the host root when there is one.
    fn cgroups(&mut self, collectors: Option<&Table>, view: &HostView) -> CgroupsSection {
        let t = self.sub(collectors, "cgroups", "collectors.cgroups");
        let path = ["collectors", "cgroups"];
        let enabled = self.bool(t, &["collectors", "cgroups", "enabled"], false);
        let section = CgroupsSection {
            enabled,
            config: self.settings(t, &path, &["enabled"]),
            default_root: match view {
                HostView::Root(root) => root.join("sys/fs/cgroup"),
                HostView::ProcSys(_, sys) => sys.join("fs/cgroup"),
                HostView::Own => PathBuf::from("/sys/fs/cgroup"),
            },
        };
        if enabled && let Some(p) = section.config.check(&section.default_root) {
            let at = self.location_in(t, path.len(), &["collectors", "cgroups", "root"]);
            self.error(at, format!("[collectors.cgroups]: {}", p.message), p.hint);
        }
        section
    }

    /// `[agent] host_root`, else the `HOST_ROOT`, `HOST_PROC` and `HOST_SYS` variables; checked
    /// for a readable `proc/stat` there, as the host collector reads it.
    fn host_view(
        &mut self,
        agent: Option<&Table>,
        host_root: Option<&std::path::Path>,
    ) -> HostView {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let (view, at, source) = match host_root {
            Some(root) => (
                HostView::Root(root.to_owned()),
                self.location_of(agent, &["agent", "host_root"]),
                "[agent] host_root",
            ),
            None => match (env("HOST_ROOT"), env("HOST_PROC"), env("HOST_SYS")) {
                (Some(root), _, _) => (
                    HostView::Root(root),
                    "environment variable HOST_ROOT".into(),
                    "HOST_ROOT",
                ),
                (None, Some(proc), sys) => (
                    HostView::ProcSys(proc, sys.unwrap_or_else(|| PathBuf::from("/sys"))),
                    "environment variable HOST_PROC".into(),
                    "HOST_PROC",
                ),
                (None, None, Some(sys)) => (
                    HostView::ProcSys(PathBuf::from("/proc"), sys),
                    "environment variable HOST_SYS".into(),
                    "HOST_SYS",
                ),
                (None, None, None) => return HostView::Own,
            },
        };
        let stat = match &view {
            HostView::Root(root) => root.join("proc/stat"),
            HostView::ProcSys(proc, _) => proc.join("stat"),
            HostView::Own => return view,
        };
        if let Err(e) = std::fs::File::open(&stat) {
            self.error(
                at,
                format!("{source}: cannot read {}: {e}", stat.display()),
                "mount the host's / there read-only (docker -v /:/host:ro, a hostPath volume in Kubernetes) and run with the host's PID namespace",
            );
        }
        view
    }

    /// `[sources.otlp]`: on when the section is there (or `enabled = true`).
    fn otlp_in(&mut self, root: &Table) -> Option<OtlpInSection> {
        let sources = self.sub(Some(root), "sources", "sources");
        let t = self.sub(sources, "otlp", "sources.otlp");
        let path = ["sources", "otlp"];
        if !self.section_on(t, &path, t.is_some()) {
            // Its keys are still checked for spelling.
            self.unknown_keys(
                t,
                "sources.otlp",
                &[
                    sonde_settings::keys::<sonde_otlp_receiver::OtlpReceiverConfig>(),
                    &["enabled"],
                ]
                .concat(),
            );
            return None;
        }
        Some(OtlpInSection {
            config: self.settings(t, &path, &["enabled"]),
            target_info_attributes: Vec::new(),
        })
    }

    /// `[[sources.scrape]]`: each a job name and a URL, with interval, timeout and credentials.
    fn scrape_targets(&mut self, root: &Table) -> Vec<sonde_scrape::Target> {
        let sources = self.sub(Some(root), "sources", "sources");
        self.unknown_keys(
            sources,
            "sources",
            &["scrape", "otlp", "target_info_attributes"],
        );
        let scrape = self.part::<Scrape>(sources, &["sources"]).scrape;
        // What was refused is reported; what starts is what was read well.
        let mut targets: Vec<sonde_scrape::Target> = Vec::new();
        for t in &scrape {
            if !targets.iter().any(|o| o.job == t.job && o.url == t.url) {
                targets.push(t.target());
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env_owned: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = env_owned.iter().map(|(k, _)| k.clone()).collect();
        let lookup = move |k: &str| {
            env_owned
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        Config::parse(text, "agent.toml", &lookup, &names)
    }

    #[test]
    fn the_embedded_defaults_are_valid() {
        let c = parse(DEFAULT_CONFIG, &[]).unwrap();
        assert_eq!(c.statsd.server.udp, "127.0.0.1:8125".parse().ok());
        // Not the library's 9464: a sonde service and the agent share a host on defaults.
        assert_eq!(
            c.prometheus.unwrap().listen,
            "127.0.0.1:9465".parse().unwrap()
        );
        assert_eq!(
            parse("", &[]).unwrap().prometheus.unwrap().listen,
            sonde_prometheus::DEFAULT_LISTEN
        );
        assert!(c.host.enabled && c.own_process && c.statsd.enabled);
        assert!(c.otlp.is_none() && c.cloudwatch.is_none());
        assert_eq!(
            parse("", &[]).unwrap().statsd.server.udp,
            "127.0.0.1:8125".parse().ok()
        );
    }

    #[test]
    fn every_error_is_reported_with_its_location_and_a_hint() {
        let text = "[agent]\ninterval = 10\nlog_fromat = \"json\"\n\n[statsd]\nudp = \"localhost\"\nqueue = -1\n\n[exporters.cloudwatch]\nregion = \"eu-west-1\"\n";
        let errors = parse(text, &[("SONDE_STATSD_UPD", "x")]).unwrap_err().0;
        let text_of = |needle: &str| {
            errors
                .iter()
                .find(|e| e.message.contains(needle))
                .unwrap_or_else(|| panic!("no error about {needle}: {errors:#?}"))
                .clone()
        };
        let e = text_of("interval");
        assert_eq!(e.location, "agent.toml:2:12");
        assert!(e.hint.contains("\"10s\""));
        let e = text_of("unknown key `log_fromat`");
        assert_eq!(e.location, "agent.toml:3:1");
        assert_eq!(e.hint, "did you mean `log_format`?");
        assert_eq!(text_of("not an address").location, "agent.toml:6:7");
        assert_eq!(text_of("queue").location, "agent.toml:7:9");
        assert!(
            text_of("needs a `namespace`")
                .location
                .starts_with("agent.toml:9")
        );
        let e = text_of("no setting has this name");
        assert_eq!(e.location, "environment variable SONDE_STATSD_UPD");
        assert_eq!(e.hint, "did you mean SONDE_STATSD_UDP?");
        assert_eq!(errors.len(), 6, "{errors:#?}");
        let e = parse("[agent\n", &[]).unwrap_err().0;
        assert!(
            e[0].message.contains("not valid TOML") && e[0].location.starts_with("agent.toml:1")
        );
    }

    #[test]
    fn environment_variables_override_the_file() {
        let c = parse(
            "[statsd]\nudp = \"127.0.0.1:1\"\n",
            &[
                ("SONDE_STATSD_UDP", "127.0.0.1:2"),
                ("SONDE_EXPORTERS_OTLP_ENABLED", "true"),
                ("SONDE_EXPORTERS_OTLP_ENDPOINT", "http://collector:4318"),
                ("SONDE_AGENT_INTERVAL", "5s"),
                ("SONDE_STATSD_RECEIVE_BUFFER", "1MiB"),
            ],
        )
        .unwrap();
        assert_eq!(c.statsd.server.udp, "127.0.0.1:2".parse().ok());
        assert_eq!(
            c.otlp
                .unwrap()
                .config
                .transport()
                .resolve(sonde_otlp::Signal::Metrics, &|_| None)
                .unwrap()
                .endpoint,
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(c.agent.interval, Duration::from_secs(5));
        assert_eq!(c.statsd.server.receive_buffer, 1024 * 1024);
        let e = parse("", &[("SONDE_AGENT_INTERVAL", "soon")])
            .unwrap_err()
            .0;
        assert_eq!(e[0].location, "environment variable SONDE_AGENT_INTERVAL");
        // A setting of a section that is off is not read: said as such, not as unknown.
        let e = parse(
            "",
            &[("SONDE_EXPORTERS_OTLP_ENDPOINT", "http://collector:4318")],
        )
        .unwrap_err()
        .0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message.contains("[exporters.otlp] is off"),
            "{}",
            e[0].message
        );
        assert!(
            e[0].hint.contains("SONDE_EXPORTERS_OTLP_ENABLED=true"),
            "{}",
            e[0].hint
        );
        // A name that is no setting of any section is still unknown.
        let e = parse("", &[("SONDE_EXPORTERS_OTLPX", "1")]).unwrap_err().0;
        assert_eq!(e[0].message, "no setting has this name");
        // A misspelt setting of an off section is a typo, with the setting it resembles.
        let e = parse("", &[("SONDE_EXPORTERS_OTLP_ENDPONT", "http://c:4318")])
            .unwrap_err()
            .0;
        assert_eq!(e[0].message, "no setting has this name");
        assert_eq!(e[0].hint, "did you mean SONDE_EXPORTERS_OTLP_ENDPOINT?");
    }

    #[test]
    fn tables_come_from_the_environment_and_list_entries_are_located_key_by_key() {
        let c = parse(
            "[exporters.otlp]\nendpoint = \"http://collector:4318\"\nheaders = { a = \"1\" }\n",
            &[(
                "SONDE_EXPORTERS_OTLP_HEADERS",
                "x-tenant=checkout, x-key=k==",
            )],
        )
        .unwrap();
        assert_eq!(
            c.otlp.unwrap().config.headers,
            [
                ("x-tenant".to_owned(), "checkout".to_owned()),
                ("x-key".to_owned(), "k==".to_owned())
            ]
        );
        let text = "[[probes.tcp]]\nname = \"db\"\naddress = \"127.0.0.1:5432\"\n\n\
                    [[probes.tcp]]\nname = \"cache\"\naddress = \"127.0.0.1:6379\"\ntimeout = 5\n";
        let errors = parse(text, &[]).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].location, "agent.toml:8:11");
        assert_eq!(
            errors[0].message,
            "[probes.tcp] `timeout` must be a duration from 10ms to 168h"
        );
    }

    #[test]
    fn a_huge_value_or_name_is_not_repeated_in_full() {
        let huge = "a".repeat(100_000);
        let errors = parse(
            "",
            &[
                ("SONDE_AGENT_RESOURCE_DETECTORS", huge.as_str()),
                ("SONDE_STATSD_ENABLED", huge.as_str()),
            ],
        )
        .unwrap_err()
        .0;
        assert_eq!(errors.len(), 2, "{errors:#?}");
        for e in &errors {
            assert!(e.message.len() <= 520 && e.location.len() <= 210, "{e:?}");
        }
    }

    #[test]
    fn an_off_section_is_still_checked_for_spelling() {
        for section in [
            "exporters.emf",
            "exporters.otlp",
            "exporters.cloudwatch",
            "sources.otlp",
        ] {
            let text = format!("[{section}]\nenabled = false\nnamepsace = \"x\"\n");
            let errors = parse(&text, &[]).unwrap_err().0;
            assert_eq!(errors.len(), 1, "{section}: {errors:#?}");
            assert!(errors[0].message.starts_with("unknown key `namepsace`"));
        }
        let errors = parse("", &[("SONDE_EXPORTERS_EMF_NAMESPACE", "app")])
            .unwrap_err()
            .0;
        assert_eq!(
            errors[0].message,
            "[exporters.emf] is off, so this setting is not read"
        );
    }

    #[test]
    fn secrets_stay_out_of_the_configurations_debug_output() {
        let text = "[exporters.otlp]\nendpoint = \"http://u:s3cret-a@collector:4318\"\n\
                    headers = { api-key = \"s3cret-b\" }\n\
                    [exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\
                    username = \"u\"\npassword = \"s3cret-c\"\nheaders = { x = \"s3cret-d\" }\n\
                    [sources.otlp]\nbearer_token = \"s3cret-e\"\n\
                    [[sources.scrape]]\njob = \"a\"\nurl = \"http://127.0.0.1:9/m\"\nbearer_token = \"s3cret-f\"\n\
                    [[probes.http]]\nname = \"api\"\nurl = \"http://127.0.0.1:9/\"\n\
                    headers = { Authorization = \"Bearer s3cret-g\" }\n";
        let debug = format!("{:?}", parse(text, &[]).unwrap());
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("api-key") && debug.contains("Authorization"));
    }

    #[test]
    fn target_info_attributes_are_a_list_of_strings() {
        let c = parse("[sources.otlp]\n", &[]).unwrap();
        let o = c.otlp_in.unwrap();
        assert!(
            o.target_info_attributes
                .iter()
                .any(|a| a == "service.version")
        );
        let c = parse(
            "[sources]\ntarget_info_attributes = [\"service.version\"]\n\
             [sources.otlp]\n[[sources.scrape]]\njob = \"a\"\nurl = \"http://127.0.0.1:1/\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.otlp_in.unwrap().target_info_attributes,
            ["service.version"]
        );
        assert_eq!(c.scrape[0].target_info_attributes, ["service.version"]);
        let c = parse(
            "[sources.otlp]\n",
            &[("SONDE_SOURCES_TARGET_INFO_ATTRIBUTES", "host.name, os.type")],
        )
        .unwrap();
        assert_eq!(
            c.otlp_in.unwrap().target_info_attributes,
            ["host.name", "os.type"]
        );
        let err = parse("[sources]\ntarget_info_attributes = [\"a\", 1]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be an array of strings"), "{err}");
    }

    /// Bad input of any kind gets errors, never a panic: the example configuration (every
    /// section) with values swapped for hostile ones, lines dropped, doubled or cut, parsed
    /// thousands of times (seeded, so a failure repeats).
    #[test]
    fn mutated_configurations_get_errors_never_a_panic() {
        const EXAMPLE: &str = include_str!("../examples-config/full.toml");
        // 969 of the 1,500 rounds reach the settings' own checks.
        sonde_testkit::mutate::assert_never_panics(
            EXAMPLE,
            1_500,
            0x9e37_79b9_7f4a_7c15,
            "agent.toml:",
            750,
            |text| {
                parse(text, &[]).map(drop).map_err(|errors| {
                    let said = errors.0.iter();
                    said.map(|e| format!("{}: {}", e.location, e.message))
                        .collect()
                })
            },
        );
    }
}
