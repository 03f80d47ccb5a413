//! Cold start benchmark: start a service N times, time to first successful response, and the
//! first request's latency against warm ones.

use std::process::ExitCode;

use crate::cli::ColdstartArgs;

/// Runs the benchmark and prints its table; the exit code follows the thresholds.
pub fn run(_args: &ColdstartArgs) -> ExitCode {
    eprintln!("error: coldstart is not built yet");
    ExitCode::from(crate::cli::EXIT_USAGE)
}
