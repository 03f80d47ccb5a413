//! Baselines, comparisons with a noise-aware regression verdict, and merging runs.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::result::{ResultError, RunResult};

/// How strict a comparison is.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// The largest tolerated relative slowdown (0.10 = 10 %).
    pub max_regression: f64,
}

/// The outcome of comparing two runs.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// True when a regression beyond the tolerance (and beyond noise) was found.
    pub regressed: bool,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "comparison: not built yet")
    }
}

/// Where the named baseline is stored.
pub fn baseline_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Compares `new` against `old`.
pub fn compare(_old: &RunResult, _new: &RunResult, _opts: &CompareOptions) -> Comparison {
    Comparison { regressed: false }
}

/// Merges runs made side by side into one result.
pub fn merge(_results: &[(String, RunResult)]) -> Result<RunResult, ResultError> {
    Err(ResultError::Histogram("merge is not built yet".to_owned()))
}
