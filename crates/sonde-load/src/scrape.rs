//! The service's own view of a run: its `/metrics` (Prometheus text or OpenMetrics) read before
//! and after, histograms subtracted, quantiles over exactly the run's window.

use std::time::Duration;

use crate::plan::Plan;
use crate::result::ServerView;

/// One read of a metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct Scrape {}

/// A scrape that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ScrapeError(pub String);

/// Reads the endpoint once.
pub fn take(url: &str, _timeout: Duration) -> Result<Scrape, ScrapeError> {
    Err(ScrapeError(format!("{url}: scraping is not built yet")))
}

/// The server's figures over the window between two scrapes.
pub fn server_view(url: &str, _before: &Scrape, _after: &Scrape, _plan: &Plan) -> ServerView {
    ServerView {
        url: url.to_owned(),
        ..Default::default()
    }
}
