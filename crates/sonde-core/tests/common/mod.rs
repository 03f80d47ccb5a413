//! Registrations the integration tests share.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code, clippy::unwrap_used)]

use sonde_core::{Family, FamilyBuilder, Histogram, Instrument, Registry, Unit};

/// Registers `builder`'s family with `labels`; the test's registrations never conflict.
pub fn labelled<M: Instrument, const N: usize>(
    builder: FamilyBuilder<'_, M>,
    labels: [&'static str; N],
) -> Family<M> {
    builder.labels(labels).build().unwrap()
}

/// Registers the histogram `name` in seconds, with the default buckets and no labels, and
/// returns its only series.
pub fn seconds_histogram(reg: &Registry, name: &'static str) -> Histogram {
    reg.histogram(name)
        .unit(Unit::Seconds)
        .build()
        .unwrap()
        .handle()
}
