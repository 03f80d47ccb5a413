//! Registrations the integration tests share.
#![allow(clippy::unwrap_used)]

use sonde_core::{Family, FamilyBuilder, Instrument};

/// Registers `builder`'s family with `labels`; the test's registrations never conflict.
pub fn labelled<M: Instrument, const N: usize>(
    builder: FamilyBuilder<'_, M>,
    labels: [&'static str; N],
) -> Family<M> {
    builder.labels(labels).build().unwrap()
}
