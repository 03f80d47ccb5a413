//! The `probe.*` families.

use std::borrow::Cow;

use sonde_core::{
    Counter, DEFAULT_MAX_SERIES, Family, FamilyBuilder, Gauge, Histogram, Instrument, Registry,
    Unit,
};

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

/// One family: name, description, unit and the label it adds to [`LABELS`].
type Spec = (&'static str, &'static str, Unit, Option<&'static str>);

/// The families, in the order [`Metrics::register`] takes them apart.
const FAMILIES: [Spec; 6] = [
    (
        SUCCESS,
        "Whether the last check of the probe succeeded (1) or failed (0).",
        Unit::None,
        None,
    ),
    (
        DURATION,
        "Time from the start of a check to the end of each phase (dns, connect, tls, first_byte, total), failed checks included.",
        Unit::Seconds,
        Some("probe.phase"),
    ),
    (
        HTTP_STATUS_CODE,
        "HTTP status code of the last response of the probe; 0 when no response was received.",
        Unit::None,
        None,
    ),
    (
        CHECKS,
        "Checks run by the probe, by result.",
        Unit::Count(Cow::Borrowed("{check}")),
        Some("result"),
    ),
    (
        FAILURES,
        "Failed checks of the probe, by error type.",
        Unit::Count(Cow::Borrowed("{check}")),
        Some("error.type"),
    ),
    (
        TLS_CERT_EXPIRY,
        "Expiry (notAfter) of the leaf certificate the server presented, in seconds since the Unix epoch.",
        Unit::Seconds,
        None,
    ),
];

/// The builder of `spec`'s family, with room for `max` series.
fn builder<'r, M: Instrument>(
    registry: &'r Registry,
    spec: &Spec,
    max: usize,
) -> FamilyBuilder<'r, M> {
    let (name, description, unit, extra) = spec;
    registry
        .family(*name)
        .description(*description)
        .unit(unit.clone())
        .labels(LABELS.iter().copied().chain(*extra))
        .max_series(max)
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
        let [success, duration, status, checks, failures, cert_expiry] = &FAMILIES;
        Ok(Metrics {
            registry: registry.clone(),
            success: builder(registry, success, max).build()?,
            duration: builder(registry, duration, max)
                .buckets(DURATION_BUCKETS)
                .build()?,
            status: builder(registry, status, max).build()?,
            checks: builder(registry, checks, max).build()?,
            failures: builder(registry, failures, max).build()?,
            cert_expiry: builder(registry, cert_expiry, max).build()?,
        })
    }

    /// Removes every series of the probe labelled `l` (each phase, result and error type).
    pub(crate) fn remove(&self, l: &[String; 3]) {
        let names = FAMILIES.each_ref().map(|f| f.0);
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
