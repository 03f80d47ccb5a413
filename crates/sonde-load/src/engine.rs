//! The load generator: open model (constant arrival rate, latency from the scheduled start) and
//! closed model (virtual users), on hyper with keep-alive, HTTP/1.1 or HTTP/2, rustls.

use crate::plan::Plan;
use crate::result::RunResult;

/// How a run is shown while it goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw a live progress line (only on a terminal).
    pub progress: bool,
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Placeholder until the engine lands.
    #[error("the load engine is not built yet")]
    NotBuilt,
}

/// Runs the plan to its end and returns the result (thresholds not yet evaluated).
pub fn run(_plan: &Plan, _opts: &RunOptions) -> Result<RunResult, EngineError> {
    Err(EngineError::NotBuilt)
}
