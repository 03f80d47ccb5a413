//! The agent's configuration: one TOML file, `SONDE_*` environment overrides, embedded defaults.
//!
//! Every error is collected (not just the first) with its location (`file:line:column`, or the
//! environment variable) and a hint; unknown keys are errors, with the closest known key
//! suggested.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{Document, Item, Table, Value};

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../sonde-agent.toml");

/// Where the agent serves `/metrics` by default: loopback, port 9465. Not the library's 9464
/// (the OpenTelemetry Prometheus exporter's port), so a service using sonde and the agent can
/// run on one host with their defaults.
pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9465";

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSection {
    /// How often sets rotate and the EMF writer flushes.
    pub interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `sonde_agent=debug,info`...).
    pub log_level: String,
    /// How long SIGTERM waits for the push exporters to deliver.
    pub shutdown_timeout: Duration,
    /// Most series per metric family.
    pub max_series_per_family: usize,
}

/// `[collectors.host]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSection {
    /// Whether host metrics are collected.
    pub enabled: bool,
    /// Collection interval.
    pub interval: Duration,
    /// Per-core CPU utilization too.
    pub per_cpu: bool,
}

/// One `[[collectors.procstat]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcstatSection {
    /// `name = "nginx"`: exact executable name.
    Name(String),
    /// `pattern = "^postgres"`: regex on the command line.
    Pattern(String),
    /// `pid_file = "/run/app.pid"`.
    PidFile(PathBuf),
}

/// One `[[statsd.mappings]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingSection {
    /// Glob on the dot-separated name (`api.*.requests`).
    pub pattern: String,
    /// New name (may use `$1`...).
    pub name: Option<String>,
    /// Static labels (values may use `$1`...).
    pub labels: Vec<(String, String)>,
    /// Drop matching metrics.
    pub drop: bool,
}

/// `[statsd]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsdSection {
    /// Whether StatsD is received.
    pub enabled: bool,
    /// UDP address.
    pub udp: Option<SocketAddr>,
    /// Unix datagram socket path.
    pub unix: Option<PathBuf>,
    /// SO_RCVBUF, bytes.
    pub receive_buffer: usize,
    /// Packets queued between receiving and parsing.
    pub queue: usize,
    /// Most distinct metric names.
    pub max_metrics: usize,
    /// Mapping rules, in order.
    pub mappings: Vec<MappingSection>,
}

/// One probe.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSection {
    /// `[[probes.http]]`.
    Http {
        /// Name (the `probe.name` label).
        name: String,
        /// URL.
        url: String,
        /// Expected statuses (empty: any 2xx/3xx).
        expect_status: Vec<u16>,
        /// Interval.
        interval: Duration,
        /// Timeout.
        timeout: Duration,
        /// CA file for https.
        ca_certificate: Option<PathBuf>,
    },
    /// `[[probes.tcp]]`.
    Tcp {
        /// Name.
        name: String,
        /// `host:port`.
        address: String,
        /// Interval.
        interval: Duration,
        /// Timeout.
        timeout: Duration,
    },
}

/// `[exporters.prometheus]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSection {
    /// Where `/metrics` is served.
    pub listen: SocketAddr,
}

/// `[exporters.otlp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSection {
    /// Endpoint (else `OTEL_EXPORTER_OTLP_*`, else the default).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    /// Export interval.
    pub interval: Duration,
    /// `cumulative` or `delta`.
    pub temporality: Option<String>,
    /// `gzip` or `none`.
    pub compression: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Per-request timeout.
    pub timeout: Option<Duration>,
}

/// `[exporters.cloudwatch]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudWatchSection {
    /// Namespace.
    pub namespace: String,
    /// Region (else the AWS chain).
    pub region: Option<String>,
    /// Export interval.
    pub interval: Duration,
    /// 1 s storage resolution.
    pub high_resolution: bool,
    /// Another endpoint.
    pub endpoint_url: Option<String>,
}

/// `[exporters.emf]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmfSection {
    /// Namespace.
    pub namespace: String,
    /// `stdout`, `file:///path`, `tcp://host:port`, `udp://host:port`.
    pub destination: String,
}

/// `[exporters.remote_write]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteSection {
    /// Receiver URL.
    pub url: String,
    /// Push interval.
    pub interval: Duration,
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
    /// `[collectors.process]`: the agent's own process metrics.
    pub own_process: bool,
    /// `[collectors.process] prometheus_names`: also the Prometheus client libraries' names
    /// (`process_cpu_seconds_total`, `process_open_fds`...), next to the OpenTelemetry ones.
    pub process_prometheus_names: bool,
    /// `[[collectors.procstat]]`.
    pub procstat: Vec<ProcstatSection>,
    /// `[statsd]`.
    pub statsd: StatsdSection,
    /// `[[probes.http]]`, `[[probes.tcp]]`.
    pub probes: Vec<ProbeSection>,
    /// `[exporters.prometheus]`.
    pub prometheus: Option<PrometheusSection>,
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
        };
        let root = doc.as_table();
        let config = r.config(root);
        // SONDE_* variables that override nothing are mistakes too.
        for name in env_names {
            if name.starts_with("SONDE_") && !r.env_used.contains(name) {
                let suggestion = closest(name, &r.env_used);
                r.errors.push(ConfigError {
                    location: format!("environment variable {name}"),
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

/// `file:line:column` of byte offset `at`.
fn location(origin: &str, text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("{origin}:{line}:{col}")
}

/// The known key closest to `key` (edit distance ≤ 3).
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses `10s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// Parses `8MiB`, `64KiB`, `1GiB`, `4096`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
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
}

fn env_name(path: &[&str]) -> String {
    format!("SONDE_{}", path.join("_").to_ascii_uppercase())
}

impl<'a> Reader<'a> {
    fn at(&self, span: Option<std::ops::Range<usize>>) -> String {
        location(self.origin, self.text, span.map(|s| s.start).unwrap_or(0))
    }

    fn error(&mut self, location: String, message: String, hint: impl Into<String>) {
        self.errors.push(ConfigError {
            location,
            message,
            hint: hint.into(),
        });
    }

    /// Reports keys of `table` not in `known`.
    fn unknown_keys(&mut self, table: Option<&Table>, path: &str, known: &[&str]) {
        let Some(table) = table else {
            return;
        };
        let known_owned: Vec<String> = known.iter().map(|k| k.to_string()).collect();
        for (key, _) in table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = table.key(key).and_then(|k| k.span());
            let hint = match closest(key, &known_owned) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("the keys of [{path}] are: {}", known.join(", ")),
            };
            self.error(
                self.at(span),
                format!("unknown key `{key}` in [{path}]"),
                hint,
            );
        }
    }

    fn sub<'t>(&mut self, table: Option<&'t Table>, key: &str, path: &str) -> Option<&'t Table> {
        let item = table?.get(key)?;
        match item {
            Item::Table(t) => Some(t),
            other => {
                self.error(
                    self.at(other.span()),
                    format!("`{path}` must be a table"),
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
                self.error(
                    loc,
                    format!("`{}` must be a value, not a table", path.join(".")),
                    "",
                );
                None
            }
        }
    }

    fn string(&mut self, table: Option<&Table>, path: &[&str]) -> Option<String> {
        match self.raw(table, path)? {
            (Raw::Env(s), _) => Some(s),
            (Raw::File(Value::String(s)), _) => Some(s.value().clone()),
            (Raw::File(_), loc) => {
                self.error(
                    loc,
                    format!("`{}` must be a string", path.join(".")),
                    "put the value in double quotes",
                );
                None
            }
        }
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
                self.error(
                    loc,
                    format!("`{}` must be true or false", path.join(".")),
                    "",
                );
                default
            }
        }
    }

    fn integer(
        &mut self,
        table: Option<&Table>,
        path: &[&str],
        default: usize,
        min: usize,
    ) -> usize {
        let (value, loc) = match self.raw(table, path) {
            None => return default,
            Some((Raw::File(Value::Integer(i)), loc)) => (usize::try_from(*i.value()).ok(), loc),
            Some((Raw::Env(s), loc)) => (s.trim().parse().ok(), loc),
            Some((Raw::File(_), loc)) => (None, loc),
        };
        match value {
            Some(v) if v >= min => v,
            _ => {
                self.error(
                    loc,
                    format!(
                        "`{}` must be a whole number of at least {min}",
                        path.join(".")
                    ),
                    format!("for example {default}"),
                );
                default
            }
        }
    }

    fn duration(&mut self, table: Option<&Table>, path: &[&str], default: Duration) -> Duration {
        let (value, loc) = match self.raw(table, path) {
            None => return default,
            Some((Raw::File(Value::String(s)), loc)) => (parse_duration(s.value()), loc),
            Some((Raw::Env(s), loc)) => (parse_duration(&s), loc),
            Some((Raw::File(_), loc)) => (None, loc),
        };
        match value {
            Some(d) if !d.is_zero() => d,
            _ => {
                self.error(
                    loc,
                    format!("`{}` must be a positive duration", path.join(".")),
                    "write it as a string like \"10s\", \"500ms\", \"2m\" or \"1h\"",
                );
                default
            }
        }
    }

    fn size(&mut self, table: Option<&Table>, path: &[&str], default: usize) -> usize {
        let (value, loc) = match self.raw(table, path) {
            None => return default,
            Some((Raw::File(Value::String(s)), loc)) => (parse_size(s.value()), loc),
            Some((Raw::File(Value::Integer(i)), loc)) => (usize::try_from(*i.value()).ok(), loc),
            Some((Raw::Env(s), loc)) => (parse_size(&s), loc),
            Some((Raw::File(_), loc)) => (None, loc),
        };
        match value {
            Some(v) => v,
            None => {
                self.error(
                    loc,
                    format!("`{}` must be a size", path.join(".")),
                    "write it like \"8MiB\", \"64KiB\" or a number of bytes",
                );
                default
            }
        }
    }

    fn address(
        &mut self,
        table: Option<&Table>,
        path: &[&str],
        default: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let s = match self.raw(table, path) {
            None => return default,
            Some((Raw::File(Value::String(s)), loc)) => (s.value().clone(), loc),
            Some((Raw::Env(s), loc)) => (s, loc),
            Some((Raw::File(_), loc)) => {
                self.error(
                    loc,
                    format!("`{}` must be a string", path.join(".")),
                    "like \"127.0.0.1:8125\"",
                );
                return default;
            }
        };
        let (s, loc) = s;
        if s.trim().is_empty() || s.trim() == "off" {
            return None;
        }
        match s.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    loc,
                    format!("`{s}` is not an address"),
                    "write it as ip:port, like \"127.0.0.1:8125\" or \"[::1]:8125\"; \"off\" disables it",
                );
                default
            }
        }
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
                self.error(
                    self.at(other.span()),
                    format!("`{path}` must be a table of strings"),
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

    /// The tables of an array of tables (`[[path]]`).
    fn tables<'t>(&mut self, table: Option<&'t Table>, key: &str, path: &str) -> Vec<&'t Table> {
        match table.and_then(|t| t.get(key)) {
            None => Vec::new(),
            Some(Item::ArrayOfTables(a)) => a.iter().collect(),
            Some(other) => {
                self.error(
                    self.at(other.span()),
                    format!("`{path}` must be a list of tables"),
                    format!("write each entry as a [[{path}]] section"),
                );
                Vec::new()
            }
        }
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
                "exporters",
            ],
        );
        let agent = self.sub(Some(root), "agent", "agent");
        self.unknown_keys(
            agent,
            "agent",
            &[
                "interval",
                "log_format",
                "log_level",
                "shutdown_timeout",
                "max_series_per_family",
            ],
        );
        let log_format = match self.string(agent, &["agent", "log_format"]).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                let loc = self.at(agent.and_then(|t| t.get("log_format")).and_then(Item::span));
                self.error(
                    loc,
                    format!("unknown log format `{other}`"),
                    "use \"text\" or \"json\"",
                );
                LogFormat::Text
            }
        };
        let agent = AgentSection {
            interval: self.duration(agent, &["agent", "interval"], Duration::from_secs(10)),
            log_format,
            log_level: self
                .string(agent, &["agent", "log_level"])
                .unwrap_or_else(|| "info".into()),
            shutdown_timeout: self.duration(
                agent,
                &["agent", "shutdown_timeout"],
                Duration::from_secs(10),
            ),
            max_series_per_family: self.integer(
                agent,
                &["agent", "max_series_per_family"],
                2000,
                1,
            ),
        };
        let resource = self.string_table(Some(root), "resource", "resource");

        let collectors = self.sub(Some(root), "collectors", "collectors");
        self.unknown_keys(collectors, "collectors", &["host", "process", "procstat"]);
        let host = self.sub(collectors, "host", "collectors.host");
        self.unknown_keys(host, "collectors.host", &["enabled", "interval", "per_cpu"]);
        let host = HostSection {
            enabled: self.bool(host, &["collectors", "host", "enabled"], true),
            interval: self.duration(
                host,
                &["collectors", "host", "interval"],
                Duration::from_secs(10),
            ),
            per_cpu: self.bool(host, &["collectors", "host", "per_cpu"], false),
        };
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
        let mut procstat = Vec::new();
        for t in self.tables(collectors, "procstat", "collectors.procstat") {
            self.unknown_keys(
                Some(t),
                "collectors.procstat",
                &["name", "pattern", "pid_file"],
            );
            let get = |k: &str| t.get(k).and_then(Item::as_str).map(str::to_string);
            let set: Vec<ProcstatSection> = [
                get("name").map(ProcstatSection::Name),
                get("pattern").map(ProcstatSection::Pattern),
                get("pid_file").map(|p| ProcstatSection::PidFile(PathBuf::from(p))),
            ]
            .into_iter()
            .flatten()
            .collect();
            if set.len() != 1 {
                self.error(
                    self.at(t.span()),
                    "each [[collectors.procstat]] needs exactly one of `name`, `pattern` or `pid_file` (a string)".into(),
                    "for example name = \"nginx\"",
                );
                continue;
            }
            if let Some(ProcstatSection::Pattern(p)) = set.first()
                && let Err(e) = regex::Regex::new(p)
            {
                let loc = self.at(t.get("pattern").and_then(Item::span));
                self.error(loc, format!("the pattern is not a valid regex: {e}"), "");
                continue;
            }
            procstat.extend(set);
        }

        let statsd = self.sub(Some(root), "statsd", "statsd");
        self.unknown_keys(
            statsd,
            "statsd",
            &[
                "enabled",
                "udp",
                "unix",
                "receive_buffer",
                "queue",
                "max_metrics",
                "mappings",
            ],
        );
        let mut mappings = Vec::new();
        for t in self.tables(statsd, "mappings", "statsd.mappings") {
            self.unknown_keys(
                Some(t),
                "statsd.mappings",
                &["match", "name", "labels", "drop"],
            );
            let Some(pattern) = t.get("match").and_then(Item::as_str) else {
                self.error(
                    self.at(t.span()),
                    "each [[statsd.mappings]] needs `match`, a glob on the metric name".into(),
                    "for example match = \"api.*.requests\"",
                );
                continue;
            };
            let name = t.get("name").and_then(Item::as_str).map(str::to_string);
            let drop = t.get("drop").and_then(Item::as_bool).unwrap_or(false);
            let labels = self.string_table(Some(t), "labels", "statsd.mappings.labels");
            if name.is_none() && labels.is_empty() && !drop {
                self.error(
                    self.at(t.span()),
                    format!("the mapping for `{pattern}` does nothing"),
                    "give it a `name`, `labels` or drop = true",
                );
            }
            mappings.push(MappingSection {
                pattern: pattern.to_string(),
                name,
                labels,
                drop,
            });
        }
        let statsd = StatsdSection {
            enabled: self.bool(statsd, &["statsd", "enabled"], true),
            udp: self.address(statsd, &["statsd", "udp"], "127.0.0.1:8125".parse().ok()),
            unix: self
                .string(statsd, &["statsd", "unix"])
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            receive_buffer: self.size(statsd, &["statsd", "receive_buffer"], 8 * 1024 * 1024),
            queue: self.integer(statsd, &["statsd", "queue"], 4096, 1),
            max_metrics: self.integer(statsd, &["statsd", "max_metrics"], 10_000, 1),
            mappings,
        };

        let probes_t = self.sub(Some(root), "probes", "probes");
        self.unknown_keys(probes_t, "probes", &["http", "tcp"]);
        let mut probes = Vec::new();
        for t in self.tables(probes_t, "http", "probes.http") {
            self.unknown_keys(
                Some(t),
                "probes.http",
                &[
                    "name",
                    "url",
                    "expect_status",
                    "interval",
                    "timeout",
                    "ca_certificate",
                ],
            );
            let (Some(name), Some(url)) = (
                t.get("name").and_then(Item::as_str),
                t.get("url").and_then(Item::as_str),
            ) else {
                self.error(
                    self.at(t.span()),
                    "each [[probes.http]] needs `name` and `url`".into(),
                    "for example name = \"api\", url = \"http://127.0.0.1:8080/health\"",
                );
                continue;
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let loc = self.at(t.get("url").and_then(Item::span));
                self.error(
                    loc,
                    format!("`{url}` is not an http(s) URL"),
                    "start it with http:// or https://",
                );
            }
            let expect_status = match t.get("expect_status") {
                None => Vec::new(),
                Some(item) => match item.as_array() {
                    Some(a)
                        if a.iter()
                            .all(|v| v.as_integer().is_some_and(|i| (100..600).contains(&i))) =>
                    {
                        a.iter()
                            .filter_map(|v| v.as_integer().and_then(|i| u16::try_from(i).ok()))
                            .collect()
                    }
                    _ => {
                        self.error(
                            self.at(item.span()),
                            "`expect_status` must be a list of HTTP statuses".into(),
                            "like [200, 204]",
                        );
                        Vec::new()
                    }
                },
            };
            let interval = self.table_duration(t, "interval", Duration::from_secs(30));
            let timeout = self.table_duration(t, "timeout", Duration::from_secs(5));
            probes.push(ProbeSection::Http {
                name: name.to_string(),
                url: url.to_string(),
                expect_status,
                interval,
                timeout,
                ca_certificate: t
                    .get("ca_certificate")
                    .and_then(Item::as_str)
                    .map(PathBuf::from),
            });
        }
        for t in self.tables(probes_t, "tcp", "probes.tcp") {
            self.unknown_keys(
                Some(t),
                "probes.tcp",
                &["name", "address", "interval", "timeout"],
            );
            let (Some(name), Some(address)) = (
                t.get("name").and_then(Item::as_str),
                t.get("address").and_then(Item::as_str),
            ) else {
                self.error(
                    self.at(t.span()),
                    "each [[probes.tcp]] needs `name` and `address`".into(),
                    "for example name = \"db\", address = \"127.0.0.1:5432\"",
                );
                continue;
            };
            let interval = self.table_duration(t, "interval", Duration::from_secs(30));
            let timeout = self.table_duration(t, "timeout", Duration::from_secs(5));
            probes.push(ProbeSection::Tcp {
                name: name.to_string(),
                address: address.to_string(),
                interval,
                timeout,
            });
        }

        let exporters = self.sub(Some(root), "exporters", "exporters");
        self.unknown_keys(
            exporters,
            "exporters",
            &["prometheus", "otlp", "cloudwatch", "emf", "remote_write"],
        );
        let t = self.sub(exporters, "prometheus", "exporters.prometheus");
        self.unknown_keys(t, "exporters.prometheus", &["enabled", "listen"]);
        let prometheus = self
            .bool(t, &["exporters", "prometheus", "enabled"], true)
            .then(|| PrometheusSection {
                listen: self
                    .address(
                        t,
                        &["exporters", "prometheus", "listen"],
                        DEFAULT_PROMETHEUS_LISTEN.parse().ok(),
                    )
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9465))),
            });

        let t = self.sub(exporters, "otlp", "exporters.otlp");
        self.unknown_keys(
            t,
            "exporters.otlp",
            &[
                "enabled",
                "endpoint",
                "protocol",
                "interval",
                "temporality",
                "compression",
                "headers",
                "timeout",
            ],
        );
        let otlp = self
            .bool(t, &["exporters", "otlp", "enabled"], t.is_some())
            .then(|| {
                let protocol = self.string(t, &["exporters", "otlp", "protocol"]);
                if let Some(p) = &protocol
                    && p != "grpc"
                    && p != "http/protobuf"
                {
                    let loc = self.at(t.and_then(|t| t.get("protocol")).and_then(Item::span));
                    self.error(
                        loc,
                        format!("unknown protocol `{p}`"),
                        "use \"grpc\" or \"http/protobuf\"",
                    );
                }
                let temporality = self.string(t, &["exporters", "otlp", "temporality"]);
                if let Some(p) = &temporality
                    && p != "cumulative"
                    && p != "delta"
                {
                    let loc = self.at(t.and_then(|t| t.get("temporality")).and_then(Item::span));
                    self.error(
                        loc,
                        format!("unknown temporality `{p}`"),
                        "use \"cumulative\" or \"delta\"",
                    );
                }
                let compression = self.string(t, &["exporters", "otlp", "compression"]);
                if let Some(p) = &compression
                    && p != "gzip"
                    && p != "none"
                {
                    let loc = self.at(t.and_then(|t| t.get("compression")).and_then(Item::span));
                    self.error(
                        loc,
                        format!("unknown compression `{p}`"),
                        "use \"gzip\" or \"none\"",
                    );
                }
                let has_timeout = self.raw(t, &["exporters", "otlp", "timeout"]).is_some();
                let timeout = has_timeout.then(|| {
                    self.duration(
                        t,
                        &["exporters", "otlp", "timeout"],
                        Duration::from_secs(10),
                    )
                });
                OtlpSection {
                    endpoint: self.string(t, &["exporters", "otlp", "endpoint"]),
                    protocol,
                    interval: self.duration(
                        t,
                        &["exporters", "otlp", "interval"],
                        Duration::from_secs(60),
                    ),
                    temporality,
                    compression,
                    headers: self.string_table(t, "headers", "exporters.otlp.headers"),
                    timeout,
                }
            });

        let t = self.sub(exporters, "cloudwatch", "exporters.cloudwatch");
        self.unknown_keys(
            t,
            "exporters.cloudwatch",
            &[
                "enabled",
                "namespace",
                "region",
                "interval",
                "high_resolution",
                "endpoint_url",
            ],
        );
        let cloudwatch = if self.bool(t, &["exporters", "cloudwatch", "enabled"], t.is_some()) {
            match self.string(t, &["exporters", "cloudwatch", "namespace"]) {
                Some(namespace) => Some(CloudWatchSection {
                    namespace,
                    region: self.string(t, &["exporters", "cloudwatch", "region"]),
                    interval: self.duration(
                        t,
                        &["exporters", "cloudwatch", "interval"],
                        Duration::from_secs(60),
                    ),
                    high_resolution: self.bool(
                        t,
                        &["exporters", "cloudwatch", "high_resolution"],
                        false,
                    ),
                    endpoint_url: self.string(t, &["exporters", "cloudwatch", "endpoint_url"]),
                }),
                None => {
                    let loc = self.at(t.and_then(Table::span));
                    self.error(
                        loc,
                        "[exporters.cloudwatch] needs a `namespace`".into(),
                        "for example namespace = \"my-service\"",
                    );
                    None
                }
            }
        } else {
            None
        };

        let t = self.sub(exporters, "emf", "exporters.emf");
        self.unknown_keys(t, "exporters.emf", &["enabled", "namespace", "destination"]);
        let emf = if self.bool(t, &["exporters", "emf", "enabled"], t.is_some()) {
            let destination = self
                .string(t, &["exporters", "emf", "destination"])
                .unwrap_or_else(|| "stdout".into());
            if sonde_cloudwatch::Destination::parse(&destination).is_err() {
                let loc = self.at(t.and_then(|t| t.get("destination")).and_then(Item::span));
                self.error(
                    loc,
                    format!("`{destination}` is not an EMF destination"),
                    "use \"stdout\", \"file:///path\", \"tcp://host:port\" or \"udp://host:port\"",
                );
            }
            match self.string(t, &["exporters", "emf", "namespace"]) {
                Some(namespace) => Some(EmfSection {
                    namespace,
                    destination,
                }),
                None => {
                    let loc = self.at(t.and_then(Table::span));
                    self.error(
                        loc,
                        "[exporters.emf] needs a `namespace`".into(),
                        "for example namespace = \"my-service\"",
                    );
                    None
                }
            }
        } else {
            None
        };

        let t = self.sub(exporters, "remote_write", "exporters.remote_write");
        self.unknown_keys(t, "exporters.remote_write", &["enabled", "url", "interval"]);
        let remote_write = if self.bool(t, &["exporters", "remote_write", "enabled"], t.is_some()) {
            match self.string(t, &["exporters", "remote_write", "url"]) {
                Some(url) => Some(RemoteWriteSection {
                    url,
                    interval: self.duration(
                        t,
                        &["exporters", "remote_write", "interval"],
                        Duration::from_secs(15),
                    ),
                }),
                None => {
                    let loc = self.at(t.and_then(Table::span));
                    self.error(
                        loc,
                        "[exporters.remote_write] needs a `url`".into(),
                        "for example url = \"http://127.0.0.1:9090/api/v1/write\"",
                    );
                    None
                }
            }
        } else {
            None
        };

        Config {
            agent,
            resource,
            host,
            own_process,
            process_prometheus_names,
            procstat,
            statsd,
            probes,
            prometheus,
            otlp,
            cloudwatch,
            emf,
            remote_write,
        }
    }

    /// A duration inside an array-of-tables entry (no environment override).
    fn table_duration(&mut self, t: &Table, key: &str, default: Duration) -> Duration {
        match t.get(key) {
            None => default,
            Some(item) => match item.as_str().and_then(parse_duration) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.error(
                        self.at(item.span()),
                        format!("`{key}` must be a positive duration"),
                        "write it as a string like \"10s\" or \"500ms\"",
                    );
                    default
                }
            },
        }
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
        assert_eq!(c.statsd.udp, "127.0.0.1:8125".parse().ok());
        // Not the library's 9464: a sonde service and the agent share a host on defaults.
        assert_eq!(
            c.prometheus.unwrap().listen,
            "127.0.0.1:9465".parse().unwrap()
        );
        assert_eq!(
            parse("", &[])
                .unwrap()
                .prometheus
                .unwrap()
                .listen
                .to_string(),
            DEFAULT_PROMETHEUS_LISTEN
        );
        assert!(c.host.enabled && c.own_process && c.statsd.enabled);
        assert!(c.otlp.is_none() && c.cloudwatch.is_none());
        assert_eq!(
            parse("", &[]).unwrap().statsd.udp,
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
        assert_eq!(c.statsd.udp, "127.0.0.1:2".parse().ok());
        assert_eq!(
            c.otlp.unwrap().endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(c.agent.interval, Duration::from_secs(5));
        assert_eq!(c.statsd.receive_buffer, 1024 * 1024);
        let e = parse("", &[("SONDE_AGENT_INTERVAL", "soon")])
            .unwrap_err()
            .0;
        assert_eq!(e[0].location, "environment variable SONDE_AGENT_INTERVAL");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1EiB"), None);
    }
}
