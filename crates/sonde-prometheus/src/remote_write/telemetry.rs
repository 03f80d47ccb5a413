//! The exporter's self-metrics, registered in the registry it exports.

use sonde_core::{Counter, Family, Gauge, Registry, Unit};

/// Requests sent, by `exporter` and `result` (`success`, `failure`).
pub const REQUESTS: &str = "sonde.exporter.requests";
/// Data points that were not delivered, by `exporter` and `reason` (`queue_full`, `rejected`,
/// `retries_exhausted`, `shutdown`, `encode`).
pub const DROPPED_POINTS: &str = "sonde.exporter.dropped_points";
/// Attempts that were retries, by `exporter`.
pub const RETRIES: &str = "sonde.exporter.retries";
/// Requests waiting to be sent (including the one in flight), by `exporter`.
pub const QUEUE_SIZE: &str = "sonde.exporter.queue.size";
/// Unix time of the last successful request, in seconds, by `exporter`.
pub const LAST_SUCCESS: &str = "sonde.exporter.last_success";

/// Resolved handles; a family that could not be registered (a conflicting registration of the
/// same name) is left out rather than failing the exporter.
pub(crate) struct ExporterMetrics {
    success: Option<Counter>,
    failure: Option<Counter>,
    retries: Option<Counter>,
    queue: Option<Gauge>,
    last_success: Option<Gauge<f64>>,
    dropped: Option<Family<Counter>>,
    exporter: &'static str,
}

impl ExporterMetrics {
    pub(crate) fn register(registry: &Registry, exporter: &'static str) -> ExporterMetrics {
        let requests = registry
            .counter(REQUESTS)
            .description("Requests sent by an exporter, by result.")
            .labels(["exporter", "result"])
            .build()
            .ok();
        let dropped = registry
            .counter(DROPPED_POINTS)
            .description(
                "Data points an exporter did not deliver, by reason (queue_full, rejected, retries_exhausted, shutdown, encode).",
            )
            .labels(["exporter", "reason"])
            .build()
            .ok();
        let retries = registry
            .counter(RETRIES)
            .description("Requests an exporter sent again after a retryable failure.")
            .labels(["exporter"])
            .build()
            .ok();
        let queue = registry
            .gauge(QUEUE_SIZE)
            .description("Requests waiting in an exporter's queue, including the one being sent.")
            .labels(["exporter"])
            .build()
            .ok();
        let last_success = registry
            .gauge_f64(LAST_SUCCESS)
            .description("Unix time of an exporter's last successful request.")
            .unit(Unit::Seconds)
            .labels(["exporter"])
            .build()
            .ok();
        ExporterMetrics {
            success: requests.as_ref().map(|f| f.with(&[exporter, "success"])),
            failure: requests.as_ref().map(|f| f.with(&[exporter, "failure"])),
            retries: retries.map(|f| f.with(&[exporter])),
            queue: queue.map(|f| f.with(&[exporter])),
            last_success: last_success.map(|f| f.with(&[exporter])),
            dropped,
            exporter,
        }
    }

    pub(crate) fn request(&self, ok: bool) {
        let c = if ok { &self.success } else { &self.failure };
        if let Some(c) = c {
            c.inc();
        }
        if ok && let Some(g) = &self.last_success {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            g.set(now);
        }
    }

    pub(crate) fn retry(&self) {
        if let Some(c) = &self.retries {
            c.inc();
        }
    }

    pub(crate) fn dropped(&self, reason: &str, points: u64) {
        if let Some(f) = &self.dropped {
            f.with(&[self.exporter, reason]).add(points);
        }
    }

    pub(crate) fn queue_size(&self, n: usize) {
        if let Some(g) = &self.queue {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
