//! A run as data: what `--json` writes, what baselines store, what `compare` and `merge` read.
//!
//! The schema is stable (`"schema": "sonde-load/1"`) and documented in the README. Every latency
//! is kept as a histogram's grid cells ([`StoredHistogram`]), so two runs merge exactly (within
//! the grid's quantile bound) instead of averaging percentiles.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sonde_core::{
    HistogramConfig, HistogramLayout, HistogramParts, HistogramPoint, Precision, Unit,
};

/// The schema tag every file carries.
pub const SCHEMA: &str = "sonde-load/1";

/// Errors reading or writing a result file.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a sonde-load result.
    #[error(
        "{path}: not a sonde-load result file ({problem}); produce one with `sonde-load run --json FILE`"
    )]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// What was to be written did not serialize as JSON.
    #[error("could not write {path}: {problem}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        problem: String,
    },
    /// A stored histogram does not rebuild.
    #[error("a stored histogram is damaged: {0}")]
    Histogram(String),
}

/// A whole run (or the merge of several).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `sonde-load` version that wrote the file.
    pub tool_version: String,
    /// Wall-clock start of the measured part, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// Measured duration in seconds (warm-up excluded).
    pub duration_seconds: f64,
    /// `"open"` or `"closed"`.
    pub model: String,
    /// Open model: the mean target rate over the run (requests per second).
    pub target_rate: Option<f64>,
    /// Closed model: the largest number of users.
    pub users: Option<u64>,
    /// Requests completed (any outcome) per second over the measured duration.
    pub achieved_rate: f64,
    /// How well the generator kept to its schedule.
    pub generator: GeneratorStats,
    /// Per request name, sorted by name.
    pub requests: Vec<RequestStats>,
    /// All requests together.
    pub total: RequestStats,
    /// Thresholds and their verdicts (empty when none were given).
    #[serde(default)]
    pub thresholds: Vec<ThresholdOutcome>,
    /// What the service measured about itself over the run's window (`--scrape`).
    #[serde(default)]
    pub server: Option<ServerView>,
    /// Files merged into this one (empty for a single run).
    #[serde(default)]
    pub merged_from: Vec<String>,
    /// The run was stopped early (Ctrl-C or SIGTERM): the figures cover `duration_seconds`,
    /// the time it ran. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// How well the generator kept to the schedule (open model).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GeneratorStats {
    /// Requests sent later than 1 ms after their scheduled time because the generator (not the
    /// server: every connection was free) was behind.
    pub late_requests: u64,
    /// The largest lag of a send behind its schedule, in seconds.
    pub max_lag_seconds: f64,
    /// True when the generator could not keep up: the achieved rate is then a limit of this
    /// machine, not of the server. Reports say so.
    pub saturated: bool,
    /// Open model: requests that waited for a free connection (the server was slower than the
    /// rate needs with this many connections); their latency includes the wait.
    pub queued_requests: u64,
}

/// Figures for one request name (or all together).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestStats {
    /// Request name (`"total"` for all together).
    pub name: String,
    /// Requests that completed with any outcome.
    pub count: u64,
    /// Requests answered with a 1xx–3xx status.
    pub ok: u64,
    /// Failed requests by class.
    pub errors: ErrorCounts,
    /// Responses by status code (`"200"`, `"503"`, ...).
    pub statuses: BTreeMap<String, u64>,
    /// Completed requests per second over the measured duration.
    pub rate: f64,
    /// Latency in seconds of every completed request (open model: from its scheduled start).
    pub latency: StoredHistogram,
    /// Per-window figures (about one per second; coarser for long runs).
    pub timeline: Vec<Window>,
}

impl RequestStats {
    /// Failed requests of every class.
    pub fn error_count(&self) -> u64 {
        self.errors.total()
    }

    /// Failed requests over all requests (0 when none).
    pub fn error_ratio(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.error_count() as f64 / self.count as f64
        }
    }
}

/// Failed requests by class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorCounts {
    /// The connection could not be made (refused, unreachable, DNS).
    pub connect: u64,
    /// No complete answer within the timeout.
    pub timeout: u64,
    /// The TLS handshake failed.
    pub tls: u64,
    /// A 4xx answer.
    pub http_4xx: u64,
    /// A 5xx answer.
    pub http_5xx: u64,
    /// The connection broke or the answer was malformed.
    pub other: u64,
}

impl ErrorCounts {
    /// All classes together.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.tls + self.http_4xx + self.http_5xx + self.other
    }

    /// Adds another set of counts.
    pub fn add(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.tls += o.tls;
        self.http_4xx += o.http_4xx;
        self.http_5xx += o.http_5xx;
        self.other += o.other;
    }
}

/// One window of the timeline.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Window {
    /// Seconds from the start of the measured run to the window's start.
    pub start_seconds: f64,
    /// Window length in seconds.
    pub seconds: f64,
    /// Requests completed in the window.
    pub count: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Latency quantiles in seconds (`None` for an empty window).
    #[serde(flatten)]
    pub quantiles: Quantiles,
    /// Largest latency.
    pub max: Option<f64>,
}

/// The latency quantiles a timeline window or a server route keeps, in seconds (`None` when
/// nothing was measured). Flattened into its owner: the files keep `p50`, `p95` and `p99`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Quantiles {
    /// The quantiles kept, in field order.
    pub const KEPT: [f64; 3] = [0.5, 0.95, 0.99];

    /// From the values in field order.
    pub fn from_array([p50, p95, p99]: [Option<f64>; 3]) -> Self {
        Quantiles { p50, p95, p99 }
    }

    /// Each kept quantile as `quantile` gives it.
    pub fn from_fn(quantile: impl Fn(f64) -> Option<f64>) -> Self {
        Self::from_array(Self::KEPT.map(quantile))
    }

    /// The values in field order.
    pub fn to_array(self) -> [Option<f64>; 3] {
        [self.p50, self.p95, self.p99]
    }
}

/// One threshold's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdOutcome {
    /// The threshold as written (`p95<300ms`).
    pub threshold: String,
    /// The request it applies to (`None`: all requests).
    pub request: Option<String>,
    /// The measured value in the threshold's unit (seconds, ratio, requests per second), or
    /// `None` when nothing was measured (counts as failed).
    pub observed: Option<f64>,
    /// Whether it holds.
    pub passed: bool,
}

/// The service's own view of the run (from `--scrape`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerView {
    /// The scraped URL (credentials removed).
    pub url: String,
    /// Per route (and method/status where the service labels them), server-measured latency over
    /// exactly the run's window.
    pub routes: Vec<ServerRoute>,
    /// The service's dependency latency histograms (database, cache, pool, HTTP clients) over
    /// the same window; `request` is always `None`.
    #[serde(default)]
    pub dependencies: Vec<ServerRoute>,
    /// Other counters that moved during the run (errors, DB, cache), as `(series, increase)`.
    pub counters: Vec<(String, f64)>,
    /// Problems met while scraping or matching (the run itself still counts).
    pub notes: Vec<String>,
}

/// One route as the server measured it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRoute {
    /// The histogram family (`http_server_request_duration_seconds`).
    pub metric: String,
    /// The series' labels, as `k="v"` pairs joined by commas.
    pub labels: String,
    /// The request name this route matched (by path), when one did.
    pub request: Option<String>,
    /// Observations during the run.
    pub count: u64,
    /// Quantiles in seconds, interpolated within the service's buckets.
    #[serde(flatten)]
    pub quantiles: Quantiles,
    /// The service's finite bucket bounds (seconds): a quantile is only known to lie in its
    /// bucket, so the report shows one in the first bucket as `≤ bound`, and no difference where
    /// the client's value falls in the same bucket. Empty in files written before it existed.
    #[serde(default)]
    pub bounds: Vec<f64>,
}

/// A latency histogram as stored: its configuration and non-empty grid cells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredHistogram {
    /// `"compact"`, `"standard"` or `"high"`.
    pub precision: String,
    /// The grid's lowest power of two.
    pub min_exponent: i32,
    /// Explicit bucket bounds (seconds).
    pub buckets: Vec<f64>,
    /// The observations (values in seconds), stored as fields of this object: `count`, `sum`,
    /// `min`, `max`, `cells` (non-empty grid cells as `[cell, count]`) and `splits`.
    #[serde(flatten)]
    pub parts: HistogramParts,
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Compact => "compact",
        Precision::Standard => "standard",
        Precision::High => "high",
    }
}

impl StoredHistogram {
    /// Stores a point.
    pub fn from_point(p: &HistogramPoint) -> Self {
        let c = p.layout().config();
        StoredHistogram {
            precision: precision_name(c.precision).to_owned(),
            min_exponent: c.min_exponent,
            buckets: c.buckets.clone(),
            parts: p.to_parts(),
        }
    }

    /// Rebuilds the point (refuses damaged data).
    pub fn to_point(&self) -> Result<HistogramPoint, ResultError> {
        let precision = match self.precision.as_str() {
            "compact" => Precision::Compact,
            "standard" => Precision::Standard,
            "high" => Precision::High,
            other => {
                return Err(ResultError::Histogram(format!(
                    "unknown precision {other:?}"
                )));
            }
        };
        let config = HistogramConfig {
            buckets: self.buckets.clone(),
            precision,
            min_exponent: self.min_exponent,
        };
        let layout: Arc<HistogramLayout> = HistogramLayout::standalone(&Unit::Seconds, config)
            .map_err(|e| ResultError::Histogram(e.to_string()))?;
        HistogramPoint::from_parts(layout, &self.parts)
            .map_err(|e| ResultError::Histogram(e.to_string()))
    }

    /// The `q` quantile in seconds (`None` when empty or damaged).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.to_point().ok()?.quantile(q)
    }

    /// Mean in seconds.
    pub fn mean(&self) -> Option<f64> {
        (self.parts.count > 0).then(|| self.parts.sum / self.parts.count as f64)
    }

    /// The union of two stored histograms.
    pub fn merge(&self, other: &StoredHistogram) -> Result<StoredHistogram, ResultError> {
        let m = self
            .to_point()?
            .merge(&other.to_point()?)
            .map_err(|e| ResultError::Histogram(e.to_string()))?;
        Ok(StoredHistogram::from_point(&m))
    }
}

impl RunResult {
    /// Reads a result file, checking its schema tag.
    pub fn read(path: &Path) -> Result<RunResult, ResultError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResultError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let r: RunResult = serde_json::from_str(&text).map_err(|e| ResultError::Format {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        if r.schema != SCHEMA {
            return Err(ResultError::Format {
                path: path.display().to_string(),
                problem: format!("schema {:?}, expected {SCHEMA:?}", r.schema),
            });
        }
        Ok(r)
    }

    /// Writes the result as pretty JSON (creating parent directories).
    pub fn write(&self, path: &Path) -> Result<(), ResultError> {
        write_json(self, path)
    }

    /// The figures of one request name, or of all together for `None`.
    pub fn request(&self, name: Option<&str>) -> Option<&RequestStats> {
        match name {
            None => Some(&self.total),
            Some(n) => self.requests.iter().find(|r| r.name == n),
        }
    }
}

/// Writes `value` as pretty JSON (creating parent directories): a run's or a cold start's file.
pub(crate) fn write_json(value: &impl Serialize, path: &Path) -> Result<(), ResultError> {
    let io = |source| ResultError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| ResultError::Write {
        path: path.display().to_string(),
        problem: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_histogram_keeps_its_file_format() {
        let layout = HistogramLayout::standalone(
            &Unit::Seconds,
            HistogramConfig {
                buckets: vec![0.1, 1.0],
                precision: Precision::Compact,
                min_exponent: -10,
            },
        )
        .unwrap();
        let empty = HistogramPoint::from_parts(
            layout,
            &HistogramParts {
                count: 0,
                sum: 0.0,
                min: None,
                max: None,
                cells: Vec::new(),
                splits: vec![0, 0],
            },
        )
        .unwrap();
        let stored = StoredHistogram::from_point(&empty);
        // The histogram's parts stand as fields of the object, in this order (the files of
        // earlier versions read the same).
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(
            json,
            r#"{"precision":"compact","min_exponent":-10,"buckets":[0.1,1.0],"count":0,"sum":0.0,"min":null,"max":null,"cells":[],"splits":[0,0]}"#
        );
        let with_cells = json
            .replace(r#""count":0"#, r#""count":3"#)
            .replace(r#""sum":0.0"#, r#""sum":1"#)
            .replace(r#""cells":[]"#, r#""cells":[[5,3]]"#);
        let read: StoredHistogram = serde_json::from_str(&with_cells).unwrap();
        assert_eq!(read.parts.count, 3);
        assert_eq!(read.parts.sum, 1.0);
        assert_eq!(read.parts.cells, vec![(5, 3)]);
        assert_eq!(
            serde_json::from_str::<StoredHistogram>(&json).unwrap(),
            stored
        );
    }

    #[test]
    fn a_value_that_does_not_serialize_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        // JSON object keys must be strings.
        let value = std::collections::BTreeMap::from([(vec![1u8], 1u8)]);
        let e = write_json(&value, &path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("could not write {}: ", path.display())),
            "{e}"
        );
        assert!(!e.contains("sonde-load run"), "{e}");
        assert!(!path.exists());
    }
}
