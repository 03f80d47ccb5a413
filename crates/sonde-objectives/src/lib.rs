//! Service level objectives in one file, `objectives.toml`, and what is generated from it:
//! Prometheus recording rules, alerts and the promtool unit tests of those alerts
//! ([`fn@generate`]), a Grafana SLO dashboard ([`grafana`]), CloudWatch alarms in a
//! CloudFormation template ([`cloudwatch`]), and load-test thresholds for `sonde-load`
//! ([`load_thresholds`]): change a number once, and every one of them follows.
//!
//! Two kinds of objective, named as in the SRE literature:
//!
//! - **threshold**: a percentile of a latency histogram stays below a threshold over a window
//!   (`http.server.request.duration{http.route!="/health"} p95 < 300ms over 5m`); alerted on
//!   with `histogram_quantile` over the window, only while the traffic is above a floor;
//! - **ratio**: good events over total events (from counters, or a histogram's observations and
//!   its buckets) meet a target over a compliance window (`99.9%` over `30d`); alerted on with
//!   the multi-window multi-burn-rate alerts of the Google SRE workbook (page when 1h and 5m
//!   burn above 14.4 or 6h and 30m above 6; ticket when 1d and 2h burn above 3 or 3d and 6h
//!   above 1).
//!
//! Metric names are the OpenTelemetry names the service registers; the rules use the
//! Prometheus names sonde renders them under ([`sonde_core::name::prometheus_name`]).
//!
//! ```
//! let text = r#"
//! [threshold.api-latency-p95]
//! metric = "http.server.request.duration"
//! selector = 'http.route!="/health"'
//! percentile = "p95"
//! threshold = "300ms"
//! window = "5m"
//!
//! [ratio.availability]
//! target = "99.9%"
//! window = "30d"
//! total = { histogram = "http.server.request.duration" }
//! bad = { selector = 'error.type!=""' }
//! "#;
//! let objectives = sonde_objectives::parse("objectives.toml", text)?;
//! assert_eq!(
//!     objectives.required_buckets(),
//!     vec![("http.server.request.duration".to_string(), 0.3)]
//! );
//! let generated = sonde_objectives::generate(&objectives)?;
//! let alerts = generated.file(sonde_objectives::ALERTS_FILE).unwrap_or_default();
//! assert!(alerts.contains("objective:http_server_request_duration_seconds:p95_rate5m{objective=\"api-latency-p95\"} > 0.3"));
//! assert!(alerts.contains("alert: SloAvailabilityBudgetBurnFast"));
//!
//! // Problems are located and say what to do.
//! let problems = sonde_objectives::parse("objectives.toml", "[threshold.x]\nmetirc = \"a\"\n").unwrap_err();
//! let e = sonde_objectives::Error::from(problems);
//! assert!(e.to_string().contains("objectives.toml:2:1: unknown key `metirc` in [threshold.x]; did you mean `metric`?"));
//! # Ok::<(), sonde_objectives::Error>(())
//! ```
//!
//! `generate FILE --out DIR` writes, all at once (into a temporary directory that then replaces
//! `DIR`):
//!
//! | file | what |
//! |---|---|
//! | `alerts/objectives.recording.yml`, `alerts/objectives.alerts.yml` | Prometheus recording rules and alerts |
//! | `alerts/tests/objectives.test.yml` | promtool unit tests of every alert |
//! | `dashboards/sonde-slo.json` | Grafana dashboard: per objective its value, error budget remaining and burn rates ([`grafana`]) |
//! | `cloudwatch/sonde-objectives.yaml` | CloudFormation template: one CloudWatch alarm per threshold objective, burn-rate alarms on the error ratio for ratio objectives ([`cloudwatch`]) |
//!
//! ```
//! # let text = r#"
//! # [threshold.api-latency-p95]
//! # metric = "http.server.request.duration"
//! # selector = 'http.route!="/health"'
//! # percentile = "p95"
//! # threshold = "300ms"
//! # window = "5m"
//! #
//! # [ratio.availability]
//! # target = "99.9%"
//! # window = "30d"
//! # total = { histogram = "http.server.request.duration" }
//! # bad = { selector = 'error.type!=""' }
//! # "#;
//! let objectives = sonde_objectives::parse("objectives.toml", text)?;
//! let generated = sonde_objectives::generate(&objectives)?;
//! let template = generated.file(sonde_objectives::cloudwatch::CLOUDWATCH_FILE).unwrap_or_default();
//! assert!(template.contains("ExtendedStatistic: 'p95'"));
//! assert!(template.contains("Threshold: 0.0144")); // the 1h burn rate 14.4 × the 0.1 % budget
//!
//! // sonde-load thresholds: what a load test can check from the client side.
//! let (thresholds, skipped) = sonde_objectives::load_thresholds(&objectives);
//! assert_eq!(thresholds[0].threshold, "p95<300ms");
//! assert_eq!(thresholds[1].threshold, "errors<0.1%");
//! assert!(skipped.is_empty());
//! # Ok::<(), sonde_objectives::Error>(())
//! ```
//!
//! `generate FILE --into ROOT` writes the same files at the same paths under `ROOT` (a
//! repository holding `alerts/`, `dashboards/` and `cloudwatch/`, other files left alone), and
//! also sets the threshold lines of the hand-written dashboards' panels that link an
//! objective's alert ([`tree`]); `--check` only compares, and says which file differs and where.
//!
//! A service that loads its file adds the latency thresholds as bucket boundaries of its
//! histograms ([`Objectives::install_boundaries`], before the instrumentation registers them)
//! and, with the `report` feature (on by default), gets a verdict per objective in
//! sonde-prometheus's `/report` ([`Objectives::judge`](crate::Objectives::judge) for
//! `PrometheusBuilder::judge`; the rules are in the `judge` module).
//!
//! The binary, `sonde-objectives`, validates a file (`validate FILE [--metrics-url URL]`) and
//! generates all of the above (`generate FILE --out DIR`, `generate FILE --into ROOT [--check]`).

use std::fmt;
use std::path::{Path, PathBuf};

pub mod cloudwatch;
pub mod generate;
pub mod grafana;
#[cfg(feature = "report")]
pub mod judge;
pub mod live;
pub mod load;
pub mod model;
pub mod parse;
pub mod selector;
pub mod tree;

pub use generate::{ALERTS_FILE, Generated, RECORDING_FILE, TESTS_FILE, generate};
pub use load::{LoadThreshold, SkippedObjective, load_thresholds};
pub use model::{Objectives, Ratio, Threshold};
pub use parse::parse;

/// One problem in an objectives file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `file:line:column`.
    pub location: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.location, self.message, self.hint)
    }
}

fn lines<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {path}: {source}; check the path and that it is readable")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems, all of them here.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
    /// The rules or tests could not be generated from valid objectives.
    #[error("{0}")]
    Generate(String),
    /// Writing the output failed (nothing was left half-written in the output directory).
    #[error("cannot write {path}: {message}")]
    Write {
        /// Where.
        path: PathBuf,
        /// Why, and what to do.
        message: String,
    },
    /// Bucket boundaries the objectives need could not be added: the histograms were
    /// registered before [`Objectives::install_boundaries`] ran (one line per histogram).
    #[error("{}", lines(.0))]
    Boundaries(Vec<String>),
    /// The `/metrics` page could not be fetched.
    #[error(
        "cannot fetch {url}: {message}; check that the service runs and serves its metrics there"
    )]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
}

impl From<Vec<Problem>> for Error {
    fn from(p: Vec<Problem>) -> Error {
        Error::Invalid(p)
    }
}

/// Reads and parses an objectives file.
pub fn load(path: &Path) -> Result<Objectives, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse(&path.display().to_string(), &text)?)
}

/// Writes `generated` into `out`: everything is written into a temporary directory next to it
/// first, which then replaces `out`; on any error `out` is left as it was. `out` must be absent,
/// empty, or hold only files this generator writes (so a wrong `--out` cannot delete anything
/// else).
pub fn write_atomically(generated: &Generated, out: &Path) -> Result<(), Error> {
    let werr = |path: &Path, message: String| Error::Write {
        path: path.to_path_buf(),
        message,
    };
    let name = out
        .file_name()
        .ok_or_else(|| {
            werr(
                out,
                "the output must name a directory, such as --out rules".into(),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if out.exists() {
        check_owned(generated, out).map_err(|m| werr(out, m))?;
    }
    let unique = unique_suffix();
    let tmp = parent.join(format!(".{name}.tmp-{unique}"));
    let result = (|| -> Result<(), Error> {
        std::fs::create_dir(&tmp).map_err(|e| {
            werr(
                &tmp,
                format!(
                    "{e}; check that the directory {} exists and is writable",
                    parent.display()
                ),
            )
        })?;
        for (path, content) in &generated.files {
            let p = tmp.join(path);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
            }
            std::fs::write(&p, content)
                .map_err(|e| werr(&p, format!("{e}; check the free space")))?;
        }
        if out.exists() {
            let old = parent.join(format!(".{name}.old-{unique}"));
            std::fs::rename(out, &old)
                .map_err(|e| werr(out, format!("{e}; check the permissions")))?;
            if let Err(e) = std::fs::rename(&tmp, out) {
                let _ = std::fs::rename(&old, out);
                return Err(werr(out, format!("{e}; check the permissions")));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, out)
                .map_err(|e| werr(out, format!("{e}; check the permissions")))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Whether `out` holds nothing but files this generator writes.
fn check_owned(generated: &Generated, out: &Path) -> Result<(), String> {
    if !out.is_dir() {
        return Err("it exists and is not a directory; choose another --out".into());
    }
    let ours: Vec<PathBuf> = generated
        .files
        .iter()
        .map(|(p, _)| PathBuf::from(p))
        .collect();
    let dirs: Vec<PathBuf> = ours
        .iter()
        .filter_map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
        })
        .collect();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = std::fs::read_dir(out.join(&rel)).map_err(|e| e.to_string())?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let r = rel.join(entry.file_name());
            if dirs.contains(&r) && entry.path().is_dir() {
                stack.push(r);
            } else if !ours.contains(&r) {
                return Err(format!(
                    "it holds {}, which this generator does not write; the directory is replaced as a whole, so choose an empty or new --out directory",
                    r.display()
                ));
            }
        }
    }
    Ok(())
}

/// A suffix no other writer of this process or another uses at the same moment (pid and
/// nanoseconds), for temporary files and directories staged beside their destination.
pub(crate) fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}
