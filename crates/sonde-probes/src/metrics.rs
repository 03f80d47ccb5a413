//! The `probe.*` families.

use std::borrow::Cow;

use sonde_core::{Counter, DEFAULT_MAX_SERIES, Family, Gauge, Histogram, Registry, Unit};

use std::time::UNIX_EPOCH;

use crate::ProbeResult;

/// `probe.success`: 1 if the last check succeeded, else 0.
pub const SUCCESS: &str = "probe.success";
/// `probe.duration`: time from the start of a check to the end of each phase, in seconds.
pub const DURATION: &str = "probe.duration";
/// `probe.http.status_code`: status of the last HTTP response (0 when none was received).
pub const HTTP_STATUS_CODE: &str = "probe.http.status_code";
/// `probe.checks`: checks run, by `result` (`success` or `failure`).
pub const CHECKS: &str = "probe.checks";
/// `probe.failures`: failed checks, by `error.type`.
pub const FAILURES: &str = "probe.failures";
/// `probe.tls.cert_expiry`: the peer leaf certificate's notAfter, in seconds since the epoch.
pub const TLS_CERT_EXPIRY: &str = "probe.tls.cert_expiry";

/// Bucket bounds of `probe.duration`, 1 ms to 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The labels every probe series carries, in order.
pub(crate) const LABELS: [&str; 3] = ["probe.name", "probe.type", "server.address"];

fn labels(extra: Option<&'static str>) -> Vec<Cow<'static, str>> {
    LABELS
        .iter()
        .copied()
        .chain(extra)
        .map(Cow::Borrowed)
        .collect()
}

pub(crate) struct Metrics {
    registry: Registry,
    success: Family<Gauge>,
    duration: Family<Histogram>,
    status: Family<Gauge>,
    checks: Family<Counter>,
    failures: Family<Counter>,
    cert_expiry: Family<Gauge>,
}

impl Metrics {
    /// Registers the families, with room for the series of `probes` probes (every label value
    /// comes from the configuration or a fixed list).
    pub(crate) fn register(registry: &Registry, probes: usize) -> Result<Self, sonde_core::Error> {
        // Per probe: 5 phases, 2 results, 9 error types.
        let max = DEFAULT_MAX_SERIES.max(probes.saturating_mul(10));
        Ok(Metrics {
            registry: registry.clone(),
            success: registry
                .gauge(SUCCESS)
                .description("Whether the last check of the probe succeeded (1) or failed (0).")
                .labels(labels(None))
                .max_series(max)
                .build()?,
            duration: registry
                .histogram(DURATION)
                .description(
                    "Time from the start of a check to the end of each phase (dns, connect, tls, first_byte, total), failed checks included.",
                )
                .unit(Unit::Seconds)
                .labels(labels(Some("probe.phase")))
                .buckets(DURATION_BUCKETS)
                .max_series(max)
                .build()?,
            status: registry
                .gauge(HTTP_STATUS_CODE)
                .description(
                    "HTTP status code of the last response of the probe; 0 when no response was received.",
                )
                .labels(labels(None))
                .max_series(max)
                .build()?,
            checks: registry
                .counter(CHECKS)
                .description("Checks run by the probe, by result.")
                .unit(Unit::Count("{check}".into()))
                .labels(labels(Some("result")))
                .max_series(max)
                .build()?,
            failures: registry
                .counter(FAILURES)
                .description("Failed checks of the probe, by error type.")
                .unit(Unit::Count("{check}".into()))
                .labels(labels(Some("error.type")))
                .max_series(max)
                .build()?,
            cert_expiry: registry
                .gauge(TLS_CERT_EXPIRY)
                .description(
                    "Expiry (notAfter) of the leaf certificate the server presented, in seconds since the Unix epoch.",
                )
                .unit(Unit::Seconds)
                .labels(labels(None))
                .max_series(max)
                .build()?,
        })
    }

    /// Removes every series of the probe labelled `l` (each phase, result and error type).
    pub(crate) fn remove(&self, l: &[String; 3]) {
        let names = [
            SUCCESS,
            DURATION,
            HTTP_STATUS_CODE,
            CHECKS,
            FAILURES,
            TLS_CERT_EXPIRY,
        ];
        let snapshot = self.registry.snapshot_families(&names);
        for family in &snapshot.families {
            for s in &family.series {
                let values: Vec<&str> = s.label_values().collect();
                if values.len() < 3 || values[..3] != [&l[0][..], &l[1][..], &l[2][..]] {
                    continue;
                }
                match family.meta.name() {
                    SUCCESS => self.success.remove(&values),
                    DURATION => self.duration.remove(&values),
                    HTTP_STATUS_CODE => self.status.remove(&values),
                    CHECKS => self.checks.remove(&values),
                    FAILURES => self.failures.remove(&values),
                    _ => self.cert_expiry.remove(&values),
                };
            }
        }
    }

    /// Creates the check counters at zero so rates work from the first failure.
    pub(crate) fn init(&self, l: &[String; 3]) {
        let [a, b, c] = l.each_ref().map(String::as_str);
        for result in ["success", "failure"] {
            let _ = self.checks.with(&[a, b, c, result]);
        }
    }

    pub(crate) fn record(&self, l: &[String; 3], http: bool, r: &ProbeResult) {
        let [a, b, c] = l.each_ref().map(String::as_str);
        self.success.with(l).set(i64::from(r.success));
        for (phase, d) in &r.phases {
            self.duration
                .with(&[a, b, c, phase])
                .observe(d.as_secs_f64());
        }
        if http {
            self.status.with(l).set(i64::from(r.status.unwrap_or(0)));
        }
        if let Some(t) = r.tls_cert_not_after {
            let secs = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            };
            self.cert_expiry.with(l).set(secs);
        }
        let result = if r.success { "success" } else { "failure" };
        self.checks.with(&[a, b, c, result]).inc();
        if let Some(e) = r.error_type {
            self.failures.with(&[a, b, c, e]).inc();
        }
    }
}
