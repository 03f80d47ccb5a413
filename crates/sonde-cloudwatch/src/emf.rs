//! The Embedded Metric Format: metrics as JSON log lines that CloudWatch Logs turns into
//! metrics, with no API call (the no-cost path for Lambda, where stdout goes to CloudWatch
//! Logs). Flush at the end of each invocation: `Faas::flush_through(Arc::new(writer), deadline)`.
//!
//! Each document holds one dimension set with its values, at most 100 metrics and 100 values
//! per metric, and stays under 256 KB (60 KB over UDP); histograms are value arrays, split
//! across documents when longer. EMF has no counts, so a histogram series is written as at
//! most [`MAX_VALUES_PER_SERIES`] values per flush: past that, each of its (at most 150)
//! distinct values keeps its share of the observations, rounded, at least one each; the values
//! left out are counted in `sonde.exporter.dropped_points{exporter="emf",reason="values_capped"}`.
//! (A StatsD timer sampled at 1/10000 records 10,000 observations per line: written out one by
//! one, one datagram would become 100 documents.) PutMetricData sends exact counts.
//!
//! ```no_run
//! use sonde_cloudwatch::{Destination, EmfBuilder};
//! let registry = sonde_core::Registry::global().clone();
//! let writer = EmfBuilder::new("checkout").registry(registry).destination(Destination::Stdout).build()?;
//! // ... handle an invocation ...
//! writer.write_now()?;
//! # Ok::<(), sonde_cloudwatch::Error>(())
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sonde_core::{Reader, Resource, Temporality};
use sonde_push::ReadSettings;
use sonde_push::telemetry::ExporterMetrics;

use crate::Error;
use crate::datum::{self, Datum, DatumValue, Settings};
use crate::exporter::check_namespace;

/// Most metrics per document.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
/// Most values per metric in one document.
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// Most values one histogram series writes per flush (10 documents' worth).
pub const MAX_VALUES_PER_SERIES: usize = 1000;
/// Documents stay below this many bytes (CloudWatch drops larger ones).
pub const MAX_DOCUMENT_BYTES: usize = 250 * 1024;
/// Documents sent over UDP stay below this (one datagram each).
pub const MAX_UDP_DOCUMENT_BYTES: usize = 60 * 1024;

/// The `exporter` label of the self-metrics.
pub const EXPORTER: &str = "emf";

/// Where documents go.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// Standard output (Lambda sends it to CloudWatch Logs).
    Stdout,
    /// Appended to a file, one document per line.
    File(PathBuf),
    /// The CloudWatch agent's TCP endpoint (newline-delimited).
    Tcp(SocketAddr),
    /// The CloudWatch agent's UDP endpoint (one document per datagram).
    Udp(SocketAddr),
}

impl Destination {
    /// `AWS_EMF_AGENT_ENDPOINT` (`tcp://127.0.0.1:25888` or `udp://...`) when set, else
    /// standard output; an invalid value is an error naming the variable.
    pub fn from_env() -> Result<Destination, Error> {
        match std::env::var("AWS_EMF_AGENT_ENDPOINT") {
            Ok(v) if !v.trim().is_empty() => Destination::parse(v.trim())
                .map_err(|e| Error::Config(format!("AWS_EMF_AGENT_ENDPOINT: {e}"))),
            _ => Ok(Destination::Stdout),
        }
    }

    /// Parses `tcp://host:port`, `udp://host:port`, `stdout` or `file:///path`.
    pub fn parse(s: &str) -> Result<Destination, Error> {
        let resolve = |hostport: &str| {
            hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "cannot resolve {hostport:?}; use host:port like 127.0.0.1:25888"
                    ))
                })
        };
        if s == "stdout" {
            Ok(Destination::Stdout)
        } else if let Some(hp) = s.strip_prefix("tcp://") {
            Ok(Destination::Tcp(resolve(hp)?))
        } else if let Some(hp) = s.strip_prefix("udp://") {
            Ok(Destination::Udp(resolve(hp)?))
        } else if let Some(p) = s.strip_prefix("file://") {
            Ok(Destination::File(PathBuf::from(p)))
        } else {
            Err(Error::Config(format!(
                "{s:?} is not an EMF destination; use tcp://host:port, udp://host:port, stdout or file:///path"
            )))
        }
    }

    fn max_document_bytes(&self) -> usize {
        match self {
            Destination::Udp(_) => MAX_UDP_DOCUMENT_BYTES,
            _ => MAX_DOCUMENT_BYTES,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("stdout"),
            Destination::File(p) => write!(f, "file://{}", p.display()),
            Destination::Tcp(a) => write!(f, "tcp://{a}"),
            Destination::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

/// Configures an [`EmfWriter`].
#[derive(Debug)]
pub struct EmfBuilder {
    namespace: String,
    /// The registry, selection and deltas to continue.
    read: ReadSettings,
    destination: Option<Destination>,
    resource: Option<Resource>,
    settings: Settings,
}

impl EmfBuilder {
    /// Writes the global registry's metrics under `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        EmfBuilder {
            namespace: namespace.into(),
            read: ReadSettings::default(),
            destination: None,
            resource: None,
            settings: Settings {
                // Unchanged counters would only lengthen every invocation's log.
                send_unchanged_counters: false,
                ..Settings::default()
            },
        }
    }

    sonde_push::read_setters!(read, delta_state: "EmfWriter::delta_state");

    sonde_push::builder_setters! {
        /// Where documents go (default [`Destination::from_env`]).
        destination: Some(Destination);
        /// The resource (default [`Resource::detect`]: on Lambda, `service.name` is the function).
        resource: Some(Resource);
        /// Dimension selection, rollups (each becomes a dimension set), resolution and histogram
        /// resolution, as for PutMetricData.
        settings: Settings;
    }

    /// Checks the settings and registers the self-metrics.
    pub fn build(self) -> Result<EmfWriter, Error> {
        check_namespace(&self.namespace)?;
        let destination = match self.destination {
            Some(d) => d,
            None => Destination::from_env()?,
        };
        let reader = self.read.reader(Temporality::Delta);
        Ok(EmfWriter {
            namespace: self.namespace,
            metrics: ExporterMetrics::register(&self.read.registry, EXPORTER),
            delta_state: reader.delta_state(),
            reader: Mutex::new(reader),
            resource: self.resource.unwrap_or_else(Resource::detect),
            settings: self.settings,
            output: Mutex::new(Output {
                destination,
                tcp: None,
            }),
        })
    }
}

/// Writes EMF documents on demand.
// `Debug` shows where it writes; the reader and its state would only be noise.
#[derive(custom_debug::Debug)]
pub struct EmfWriter {
    namespace: String,
    #[debug(skip)]
    metrics: ExporterMetrics,
    #[debug(skip)]
    reader: Mutex<Reader>,
    #[debug(skip)]
    delta_state: sonde_core::DeltaState,
    #[debug(skip)]
    resource: Resource,
    #[debug(skip)]
    settings: Settings,
    output: Mutex<Output>,
}

#[derive(Debug)]
struct Output {
    destination: Destination,
    tcp: Option<TcpStream>,
}

/// The lifecycle every sonde component shares: `flush` and `shutdown` both write what changed
/// now, on the calling thread ([`EmfWriter::write_now`]; writes to a socket have their own
/// timeouts); the writer has no thread to stop.
impl sonde_core::Component for EmfWriter {
    fn name(&self) -> &'static str {
        EXPORTER
    }

    fn flush(&self, _timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        self.write_now()
            .map(|_| ())
            .map_err(|e| sonde_core::ComponentError::new(EXPORTER, e))
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), sonde_core::ComponentError> {
        sonde_core::Component::flush(self, timeout)
    }
}

impl EmfWriter {
    /// What its deltas start from, for the writer that replaces it
    /// ([`EmfBuilder::continue_deltas`]).
    pub fn delta_state(&self) -> sonde_core::DeltaState {
        self.delta_state.clone()
    }

    /// Writes what changed since the previous write; returns the number of documents.
    pub fn write_now(&self) -> Result<usize, Error> {
        let snapshot = self
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .collect();
        let converted = datum::convert(&snapshot, &self.resource, &self.settings);
        for (reason, n) in &converted.dropped {
            self.metrics.dropped(reason, *n);
        }
        let datums = converted.datums.len() as u64;
        let mut output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let (docs, left_out) = documents(
            &self.namespace,
            converted.datums,
            output.destination.max_document_bytes(),
        );
        if left_out.capped_values > 0 {
            self.metrics
                .dropped("values_capped", left_out.capped_values);
        }
        if left_out.conflicts > 0 {
            self.metrics.dropped("name_conflict", left_out.conflicts);
        }
        match output.write(&docs) {
            Ok(()) => {
                self.metrics.request(true);
                self.metrics.sent(datums);
                Ok(docs.len())
            }
            Err(e) => {
                self.metrics.request(false);
                self.metrics.dropped("write_failed", datums);
                Err(Error::Write {
                    destination: output.destination.to_string(),
                    source: e,
                })
            }
        }
    }
}

impl Output {
    fn write(&mut self, docs: &[String]) -> std::io::Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        match &self.destination {
            Destination::Stdout => {
                let mut out = std::io::stdout().lock();
                for d in docs {
                    out.write_all(d.as_bytes())?;
                    out.write_all(b"\n")?;
                }
                out.flush()
            }
            Destination::File(path) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                let mut buf = Vec::new();
                for d in docs {
                    buf.extend_from_slice(d.as_bytes());
                    buf.push(b'\n');
                }
                f.write_all(&buf)
            }
            Destination::Udp(addr) => {
                let socket = UdpSocket::bind(if addr.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                })?;
                for d in docs {
                    socket.send_to(d.as_bytes(), addr)?;
                }
                Ok(())
            }
            Destination::Tcp(addr) => {
                let addr = *addr;
                let mut buf = Vec::new();
                for d in docs {
                    buf.extend_from_slice(d.as_bytes());
                    buf.push(b'\n');
                }
                // Reuse the connection; on failure reconnect once (the agent may have restarted).
                for attempt in 0..2 {
                    if self.tcp.is_none() {
                        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                        s.set_write_timeout(Some(Duration::from_secs(2)))?;
                        self.tcp = Some(s);
                    }
                    let Some(stream) = self.tcp.as_mut() else {
                        continue;
                    };
                    match stream.write_all(&buf).and_then(|()| stream.flush()) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            self.tcp = None;
                            if attempt == 1 {
                                return Err(e);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// One metric of a dimension group, its values expanded.
struct MetricValues {
    name: String,
    unit: &'static str,
    resolution: i32,
    values: Vec<f64>,
    single: bool,
}

/// What [`documents`] left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Datums whose name collides with a dimension key.
    pub conflicts: u64,
    /// Histogram values not written past [`MAX_VALUES_PER_SERIES`].
    pub capped_values: u64,
}

/// `values` repeated `counts` times, at most `cap` in all: past it, each value keeps its share
/// of the total, rounded, and at least one. Returns the values and how many were left out.
fn expand(values: &[f64], counts: &[f64], cap: usize) -> (Vec<f64>, u64) {
    let counts: Vec<u64> = counts.iter().map(|c| c.round().max(0.0) as u64).collect();
    let total: u64 = counts.iter().sum();
    let scale = if total as usize > cap {
        cap as f64 / total as f64
    } else {
        1.0
    };
    let mut out = Vec::with_capacity((total as usize).min(cap.max(values.len())));
    for (v, &c) in values.iter().zip(&counts) {
        if c == 0 {
            continue;
        }
        let n = ((c as f64 * scale).round() as u64).clamp(1, c);
        out.extend(std::iter::repeat_n(*v, n as usize));
    }
    let left_out = total - out.len() as u64;
    (out, left_out)
}

/// Builds the documents: grouped by dimensions, split by the metric, value and size limits.
/// Returns them and what was left out.
pub fn documents(namespace: &str, datums: Vec<Datum>, max_bytes: usize) -> (Vec<String>, LeftOut) {
    // Keyed by (dimensions, timestamp).
    type Group = (Vec<(String, String)>, u64);
    let mut groups: BTreeMap<Group, Vec<MetricValues>> = BTreeMap::new();
    let mut left_out = LeftOut::default();
    for d in datums {
        if d.dimensions.iter().any(|(k, _)| *k == d.name) || d.name == "_aws" {
            left_out.conflicts += 1;
            continue;
        }
        let metrics = groups.entry((d.dimensions, d.timestamp_ms)).or_default();
        let single = matches!(d.value, DatumValue::Value(_));
        let values: Vec<f64> = match d.value {
            DatumValue::Value(v) => vec![v],
            DatumValue::Values { values, counts } => {
                let (values, capped) = expand(&values, &counts, MAX_VALUES_PER_SERIES);
                left_out.capped_values += capped;
                values
            }
        };
        match metrics.iter_mut().find(|m| m.name == d.name) {
            Some(m) => {
                m.values.extend(values);
                m.single = false;
            }
            None => metrics.push(MetricValues {
                name: d.name,
                unit: d.unit,
                resolution: d.storage_resolution,
                single,
                values,
            }),
        }
    }
    let mut docs = Vec::new();
    for ((dims, timestamp), metrics) in groups {
        // Chunk k of every metric goes to the k-th round of documents.
        let rounds = metrics
            .iter()
            .map(|m| m.values.len().div_ceil(MAX_VALUES_PER_METRIC).max(1))
            .max()
            .unwrap_or(0);
        for round in 0..rounds {
            let mut doc = Doc::new(namespace, &dims, timestamp);
            for m in &metrics {
                let from = round * MAX_VALUES_PER_METRIC;
                if from >= m.values.len() && !(round == 0 && m.values.is_empty()) {
                    continue;
                }
                let chunk = &m.values
                    [from.min(m.values.len())..(from + MAX_VALUES_PER_METRIC).min(m.values.len())];
                if chunk.is_empty() {
                    continue;
                }
                let value = if m.single && chunk.len() == 1 {
                    json!(chunk[0])
                } else {
                    Value::Array(chunk.iter().map(|v| json!(v)).collect())
                };
                let entry_bytes = m.name.len() * 2 + m.unit.len() + 64 + value.to_string().len();
                if doc.metrics.len() >= MAX_METRICS_PER_DOCUMENT
                    || (!doc.metrics.is_empty() && doc.bytes + entry_bytes > max_bytes)
                {
                    docs.push(doc.finish());
                    doc = Doc::new(namespace, &dims, timestamp);
                }
                doc.bytes += entry_bytes;
                doc.metrics.push(json!({
                    "Name": m.name,
                    "Unit": m.unit,
                    "StorageResolution": m.resolution,
                }));
                doc.members.insert(m.name.clone(), value);
            }
            if !doc.metrics.is_empty() {
                docs.push(doc.finish());
            }
        }
    }
    (docs, left_out)
}

struct Doc {
    members: Map<String, Value>,
    metrics: Vec<Value>,
    namespace: String,
    keys: Vec<String>,
    timestamp: u64,
    bytes: usize,
}

impl Doc {
    fn new(namespace: &str, dims: &[(String, String)], timestamp: u64) -> Doc {
        let mut members = Map::new();
        let mut bytes = 160 + namespace.len();
        for (k, v) in dims {
            members.insert(k.clone(), Value::String(v.clone()));
            bytes += 2 * k.len() + v.len() + 8;
        }
        Doc {
            members,
            metrics: Vec::new(),
            namespace: namespace.to_string(),
            keys: dims.iter().map(|(k, _)| k.clone()).collect(),
            timestamp,
            bytes,
        }
    }

    fn finish(mut self) -> String {
        self.members.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [self.keys],
                    "Metrics": self.metrics,
                }],
            }),
        );
        Value::Object(self.members).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sonde_core::Registry;

    #[test]
    fn expand_keeps_small_counts_and_shares_past_the_cap() {
        assert_eq!(
            expand(&[1.0, 2.0], &[2.0, 1.0], 10),
            (vec![1.0, 1.0, 2.0], 0)
        );
        // 10,000 observations of three values, 1 % at the high one.
        let (values, left_out) = expand(&[0.01, 0.1, 1.0], &[8900.0, 1000.0, 100.0], 1000);
        assert_eq!(values.len() as u64 + left_out, 10_000);
        let share = |v: f64| values.iter().filter(|x| **x == v).count();
        assert_eq!((share(0.01), share(0.1), share(1.0)), (890, 100, 10));
        // A rare value is never lost.
        let (values, _) = expand(&[0.01, 5.0], &[1_000_000.0, 1.0], 1000);
        assert!(values.contains(&5.0));
        assert!(values.len() <= 1001);
    }

    /// A sampled StatsD timer can record tens of thousands of observations per datagram; one
    /// flush stays a few documents, and what is left out is counted.
    #[test]
    fn a_huge_histogram_is_capped_per_flush_and_counted() {
        let dir = test_dir("cap");
        let path = dir.join("emf.log");
        let registry = Registry::new();
        let h = sonde_core::testing::seconds_histogram(&registry, "job.duration", &[]).handle();
        for i in 0..200_000u32 {
            h.observe(0.001 * f64::from(1 + i % 50));
        }
        let writer = EmfBuilder::new("sonde-test")
            .registry(registry.clone())
            .destination(Destination::File(path.clone()))
            .build()
            .unwrap();
        writer.write_now().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let written: usize = text
            .lines()
            .map(|l| {
                let doc: Value = serde_json::from_str(l).unwrap();
                doc.get("job.duration")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            })
            .sum();
        assert!(written <= MAX_VALUES_PER_SERIES + 150, "{written}");
        assert!(
            text.lines().count() <= 12,
            "{} documents",
            text.lines().count()
        );
        let capped = registry
            .snapshot()
            .point(
                sonde_push::telemetry::DROPPED_POINTS,
                &[("exporter", EXPORTER), ("reason", "values_capped")],
            )
            .and_then(|p| p.number())
            .map(|n| n.as_f64())
            .unwrap();
        assert_eq!(capped as usize + written, 200_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A new directory for one test's documents, unique to this process and moment.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn test_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sonde-emf-{tag}-{}-{}",
        std::process::id(),
        sonde_core::unix_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod handover_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sonde_core::Registry;

    /// A writer replacing another (an agent reload) continues its deltas: what the first wrote
    /// is not written again.
    #[test]
    fn a_replacing_writer_continues_the_deltas() {
        let dir = test_dir("handover");
        let registry = Registry::new();
        let c = registry.counter("jobs").build().unwrap().handle();
        let writer = |file: &str, from: Option<sonde_core::DeltaState>| {
            let mut b = EmfBuilder::new("sonde-test")
                .registry(registry.clone())
                .destination(Destination::File(dir.join(file)));
            if let Some(d) = from {
                b = b.continue_deltas(d);
            }
            b.build().unwrap()
        };
        let jobs = |file: &str| -> f64 {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let doc: Value = serde_json::from_str(l).unwrap();
                    doc.get("jobs").and_then(Value::as_f64)
                })
                .sum()
        };
        let first = writer("a.log", None);
        c.add(100);
        first.write_now().unwrap();
        c.add(50);
        let second = writer("b.log", Some(first.delta_state()));
        drop(first);
        second.write_now().unwrap();
        assert_eq!((jobs("a.log"), jobs("b.log")), (100.0, 50.0));
        // Without the handover the new writer's first flush repeats the total.
        let fresh = writer("c.log", None);
        fresh.write_now().unwrap();
        assert_eq!(jobs("c.log"), 150.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
