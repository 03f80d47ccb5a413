//! Scenario files (TOML): named requests with weights, headers and bodies; stages; thresholds.
//! Errors are located by `file:line:column`.

use std::path::Path;

use crate::plan::Plan;

/// Everything wrong with a scenario file, each problem located.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ScenarioError {
    /// One line per problem: `file:line:column: what is wrong; what to do`.
    pub problems: Vec<String>,
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Plan, ScenarioError> {
    Err(ScenarioError {
        problems: vec![format!(
            "{}: scenario files are not supported yet",
            path.display()
        )],
    })
}
