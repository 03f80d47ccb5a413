//! What a configuration costs: CloudWatch bills custom metrics per metric-month and
//! PutMetricData per 1,000 requests.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use sonde_core::{Registry, Resource, Selection, Temporality};

use crate::datum::{self, MAX_REQUEST_BYTES, Settings};

/// The estimate for one registry and configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CostPreview {
    /// Distinct CloudWatch metrics (name and dimension values): each is billed per month.
    pub metrics: usize,
    /// Datums sent per interval.
    pub datums_per_interval: usize,
    /// PutMetricData calls per interval.
    pub requests_per_interval: usize,
    /// The interval.
    pub interval: Duration,
    /// PutMetricData calls per hour.
    pub requests_per_hour: f64,
    /// Estimated monthly cost of the metrics, US dollars (tiered list price).
    pub metrics_usd_per_month: f64,
    /// Estimated monthly cost of the calls, US dollars.
    pub requests_usd_per_month: f64,
    /// Whether the metrics are high resolution (billed like standard ones, but alarms and
    /// queries on them cost more).
    pub high_resolution: bool,
}

/// List prices (us-east-1): custom metrics per metric-month by tier, and per 1,000 API requests.
const TIERS: &[(f64, f64)] = &[
    (10_000.0, 0.30),
    (240_000.0, 0.10),
    (750_000.0, 0.05),
    (f64::INFINITY, 0.02),
];
const USD_PER_1000_REQUESTS: f64 = 0.01;
const HOURS_PER_MONTH: f64 = 730.0;

fn metric_cost(metrics: f64) -> f64 {
    let mut left = metrics;
    let mut cost = 0.0;
    for (size, price) in TIERS {
        let n = left.min(*size);
        cost += n * price;
        left -= n;
        if left <= 0.0 {
            break;
        }
    }
    cost
}

/// Estimates, for the series `registry` holds now and the conversion `settings`, how many
/// CloudWatch metrics and PutMetricData calls an export every `interval` implies, and their
/// monthly list price. Reads the registry without disturbing any exporter.
pub fn cost_preview(
    registry: &Registry,
    resource: &Resource,
    settings: &Settings,
    interval: Duration,
) -> CostPreview {
    cost_preview_selected(registry, resource, settings, interval, &Selection::new())
}

/// [`cost_preview`] of what `selection` sends.
pub(crate) fn cost_preview_selected(
    registry: &Registry,
    resource: &Resource,
    settings: &Settings,
    interval: Duration,
    selection: &Selection,
) -> CostPreview {
    let snapshot = registry
        .export_reader(Temporality::Delta, selection.clone(), None)
        .collect();
    // Every series counts, changed or not: CloudWatch bills a metric for any month it
    // received data.
    let settings = Settings {
        send_unchanged_counters: true,
        ..settings.clone()
    };
    let converted = datum::convert(&snapshot, resource, &settings);
    let metrics: BTreeSet<(&str, &[(String, String)])> = converted
        .datums
        .iter()
        .map(|d| (d.name.as_str(), d.dimensions.as_slice()))
        .collect();
    let metrics = metrics.len();
    let datums_per_interval = converted.datums.len();
    let requests_per_interval = datum::batches(converted.datums, MAX_REQUEST_BYTES).len();
    let interval = interval.max(Duration::from_secs(1));
    let requests_per_hour = requests_per_interval as f64 * 3600.0 / interval.as_secs_f64();
    CostPreview {
        metrics,
        datums_per_interval,
        requests_per_interval,
        interval,
        requests_per_hour,
        metrics_usd_per_month: metric_cost(metrics as f64),
        requests_usd_per_month: requests_per_hour * HOURS_PER_MONTH / 1000.0
            * USD_PER_1000_REQUESTS,
        high_resolution: settings.storage_resolution == 1,
    }
}

impl fmt::Display for CostPreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "CloudWatch cost preview (list prices, us-east-1):")?;
        writeln!(
            f,
            "  metrics (name + dimension values):  {:>10}   ~${:.2}/month",
            self.metrics, self.metrics_usd_per_month
        )?;
        writeln!(
            f,
            "  PutMetricData calls per interval:    {:>10}   ({} datums every {:?})",
            self.requests_per_interval, self.datums_per_interval, self.interval
        )?;
        writeln!(
            f,
            "  PutMetricData calls per hour:        {:>10.0}   ~${:.2}/month",
            self.requests_per_hour, self.requests_usd_per_month
        )?;
        write!(
            f,
            "  total:                                            ~${:.2}/month{}",
            self.metrics_usd_per_month + self.requests_usd_per_month,
            if self.high_resolution {
                " (high-resolution: alarms and queries cost more)"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_metrics_and_calls_and_prices_them() {
        let reg = Registry::new();
        let c =
            sonde_core::testing::family(reg.counter("requests").labels(["route"]).max_series(5000));
        for i in 0..2500 {
            c.with(&[&format!("/r/{i}")]).inc();
        }
        let resource = Resource::empty().with("service.name", "svc");
        let p = cost_preview(
            &reg,
            &resource,
            &Settings::default(),
            Duration::from_secs(60),
        );
        // 2500 series plus the registry's own self-metrics.
        assert!(p.metrics >= 2500 && p.metrics < 2600, "{p:?}");
        assert_eq!(
            p.requests_per_interval,
            p.datums_per_interval.div_ceil(1000)
        );
        assert_eq!(p.requests_per_hour, p.requests_per_interval as f64 * 60.0);
        assert!((p.metrics_usd_per_month - 0.30 * p.metrics as f64).abs() < 1e-6);
        let text = p.to_string();
        assert!(text.contains("PutMetricData calls per hour"), "{text}");
        assert_eq!(metric_cost(20_000.0), 10_000.0 * 0.30 + 10_000.0 * 0.10);
    }
}
