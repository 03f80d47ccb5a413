//! What every push exporter (remote write, OTLP, CloudWatch, EMF) shares: jittered backoff, and
//! self-metrics registered in the registry the exporter reads, so `/metrics`, `/health` and
//! dashboards see every exporter's health under one set of names with an `exporter` label.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonde_core::{Counter, Family, FamilyBuilder, Gauge, Instrument, Registry, Unit};

/// Requests sent, by `exporter` and `result` (`success`, `failure`).
pub const REQUESTS: &str = "sonde.exporter.requests";
/// Data points that were not delivered, by `exporter` and `reason` (`queue_full`, `rejected`,
/// `retries_exhausted`, `shutdown`, `encode`, `panic`; with a durable queue also `disk_error` and
/// `corrupt`).
pub const DROPPED_POINTS: &str = "sonde.exporter.dropped_points";
/// Attempts that were retries, by `exporter`.
pub const RETRIES: &str = "sonde.exporter.retries";
/// Requests waiting to be sent (including the one in flight), by `exporter`.
pub const QUEUE_SIZE: &str = "sonde.exporter.queue.size";
/// Unix time of the last successful request, in seconds, by `exporter`.
pub const LAST_SUCCESS: &str = "sonde.exporter.last_success";
/// Unix time of the first failed request since the last success, in seconds, by `exporter`;
/// 0 while the last request succeeded. `/health` reports an exporter as failing when this is
/// older than a few of its intervals.
pub const FAILING_SINCE: &str = "sonde.exporter.failing_since";
/// An exporter's collection interval, in seconds, by `exporter` (what "N intervals without a
/// success" is measured in).
pub const INTERVAL: &str = "sonde.exporter.interval";
/// Data points delivered (CloudWatch datums, OTLP data points...), by `exporter`.
pub const SENT_POINTS: &str = "sonde.exporter.sent_points";
/// Data points a receiver accepted the request for but rejected itself (OTLP partial success),
/// by `exporter`.
pub const REJECTED_POINTS: &str = "sonde.exporter.rejected_points";
/// Panics caught inside an exporter's task (a source's collection or a sink's send), by
/// `exporter`; the batch is dropped (reason `panic`) and the exporter keeps running.
pub const PANICS: &str = "sonde.exporter.panics";

/// Bytes a durable queue holds on disk, by `exporter` (only exporters with a durable queue).
pub const QUEUE_DISK_BYTES: &str = "sonde.exporter.queue.disk_bytes";
/// Corrupt regions of a durable queue that were skipped (from the first bad record to the end
/// of its segment), by `exporter`.
pub const QUEUE_CORRUPT: &str = "sonde.exporter.queue.corrupt_segments";
/// Data points sent again after a restart because their request was in flight when the
/// previous process stopped (possible duplicates), by `exporter`.
pub const QUEUE_REDELIVERED: &str = "sonde.exporter.queue.redelivered_points";

/// The series of `exporter` in the family `builder` registers with the one label `exporter`;
/// `None` when the family cannot be registered (a conflicting registration of the same name),
/// which leaves the self-metric out rather than failing the exporter.
pub(crate) fn per_exporter<M: Instrument>(
    builder: FamilyBuilder<'_, M>,
    exporter: &'static str,
) -> Option<M> {
    builder
        .labels(["exporter"])
        .build()
        .ok()
        .map(|f| f.with(&[exporter]))
}

/// One exporter's resolved self-metric handles. A family that could not be registered (a
/// conflicting registration of the same name) is left out rather than failing the exporter.
#[derive(Debug)]
pub struct ExporterMetrics {
    success: Option<Counter>,
    failure: Option<Counter>,
    retries: Option<Counter>,
    queue: Option<Gauge>,
    last_success: Option<Gauge<f64>>,
    failing_since: Option<Gauge<f64>>,
    interval: Option<Gauge<f64>>,
    rejected: Option<Counter>,
    sent: Option<Counter>,
    panics: Option<Counter>,
    dropped: Option<Family<Counter>>,
    exporter: &'static str,
}

impl ExporterMetrics {
    /// Registers (or finds) the families and resolves the series of `exporter`.
    pub fn register(registry: &Registry, exporter: &'static str) -> ExporterMetrics {
        // Most self-metrics are counts.
        let counter = |name: &'static str, description: &'static str| {
            registry.counter(name).description(description)
        };
        // Two of them have a second label; their families are resolved per series.
        let counter_by = |name, description, label: &'static str| {
            counter(name, description)
                .labels(["exporter", label])
                .build()
                .ok()
        };
        let requests = counter_by(
            REQUESTS,
            "Requests sent by an exporter, by result.",
            "result",
        );
        let dropped = counter_by(
            DROPPED_POINTS,
            "Data points an exporter did not deliver, by reason (queue_full, rejected, retries_exhausted, shutdown, encode).",
            "reason",
        );
        let retries = counter(
            RETRIES,
            "Requests an exporter sent again after a retryable failure.",
        );
        let queue = registry
            .gauge(QUEUE_SIZE)
            .description("Requests waiting in an exporter's queue, including the one being sent.");
        // Three self-metrics are times or durations, in seconds.
        let seconds = |name: &'static str, description: &'static str| {
            registry
                .gauge_f64(name)
                .description(description)
                .unit(Unit::Seconds)
        };
        let last_success = seconds(
            LAST_SUCCESS,
            "Unix time of an exporter's last successful request.",
        );
        let failing_since = seconds(
            FAILING_SINCE,
            "Unix time of an exporter's first failed request since its last success; 0 while healthy.",
        );
        let interval = seconds(INTERVAL, "An exporter's collection interval.");
        let rejected = counter(
            REJECTED_POINTS,
            "Data points a receiver reported as rejected in an accepted request.",
        );
        let sent = counter(SENT_POINTS, "Data points an exporter delivered.");
        let panics = counter(
            PANICS,
            "Panics caught inside an exporter's collection or send; the exporter kept running.",
        );
        ExporterMetrics {
            // Families register at `per_exporter`, in the order they always have.
            retries: per_exporter(retries, exporter),
            queue: per_exporter(queue, exporter),
            last_success: per_exporter(last_success, exporter),
            failing_since: per_exporter(failing_since, exporter),
            interval: per_exporter(interval, exporter),
            rejected: per_exporter(rejected, exporter),
            sent: per_exporter(sent, exporter),
            panics: per_exporter(panics, exporter),
            success: requests.as_ref().map(|f| f.with(&[exporter, "success"])),
            failure: requests.as_ref().map(|f| f.with(&[exporter, "failure"])),
            dropped,
            exporter,
        }
    }

    /// The `exporter` label value.
    pub fn exporter(&self) -> &'static str {
        self.exporter
    }

    /// Counts a request by result; a success sets the time of the last success and clears
    /// [`FAILING_SINCE`], a failure sets it if it is not set yet.
    pub fn request(&self, ok: bool) {
        let c = if ok { &self.success } else { &self.failure };
        if let Some(c) = c {
            c.inc();
        }
        let now = unix_now();
        if ok {
            if let Some(g) = &self.last_success {
                g.set(now);
            }
            if let Some(g) = &self.failing_since {
                g.set(0.0);
            }
        } else if let Some(g) = &self.failing_since
            && g.value().as_f64() == 0.0
        {
            g.set(now);
        }
    }

    /// Publishes the collection interval.
    pub fn interval(&self, interval: Duration) {
        if let Some(g) = &self.interval {
            g.set(interval.as_secs_f64());
        }
    }

    /// Counts a retry.
    pub fn retry(&self) {
        if let Some(c) = &self.retries {
            c.inc();
        }
    }

    /// Counts `points` not delivered for `reason`.
    pub fn dropped(&self, reason: &str, points: u64) {
        if let Some(f) = &self.dropped {
            f.with(&[self.exporter, reason]).add(points);
        }
    }

    /// Counts `points` delivered.
    pub fn sent(&self, points: u64) {
        if let Some(c) = &self.sent {
            c.add(points);
        }
    }

    /// Counts a panic caught inside the exporter's task.
    pub fn panicked(&self) {
        if let Some(c) = &self.panics {
            c.inc();
        }
    }

    /// Counts `points` the receiver rejected.
    pub fn rejected(&self, points: u64) {
        if let Some(c) = &self.rejected {
            c.add(points);
        }
    }

    /// Sets the number of requests waiting.
    pub fn queue_size(&self, n: usize) {
        if let Some(g) = &self.queue {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Exponential backoff with jitter: each delay is drawn between half and all of a step that
/// doubles from `initial` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    initial: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`, with a seed from the clock and the pid.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (std::process::id() as u64).rotate_left(32);
        Backoff {
            step: initial,
            initial,
            max: max.max(initial),
            rng: seed | 1,
        }
    }

    /// Back to the initial step (after a success).
    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    /// The next delay; `retry_after` from the server replaces the drawn delay (capped at `max`).
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.step;
        self.step = self.step.saturating_mul(2).min(self.max);
        if let Some(d) = retry_after {
            return d.min(self.max);
        }
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        step.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut steps = Vec::new();
        for _ in 0..8 {
            steps.push(b.next(None));
        }
        let bounds = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, max) in steps.iter().zip(bounds) {
            let max = Duration::from_millis(max);
            assert!(*d <= max && *d >= max / 2, "{steps:?}");
        }
        assert_eq!(
            b.next(Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.next(Some(Duration::from_millis(5))),
            Duration::from_millis(5)
        );
        b.reset();
        assert!(b.next(None) <= Duration::from_millis(100));
    }
}
