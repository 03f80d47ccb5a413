//! Errors of the engine.

use crate::kind::Kind;

/// Everything that can go wrong when registering a family or resolving a series.
///
/// Messages say what was wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric name broke the naming rules.
    #[error(
        "invalid metric name {name:?}: {problem}; a metric name starts with a letter and holds only letters, digits, '_', '.', '-' or '/' (at most 255 bytes)"
    )]
    InvalidMetricName {
        /// The rejected name.
        name: String,
        /// What exactly is wrong, e.g. the offending character and its position.
        problem: String,
    },
    /// A label name broke the naming rules.
    #[error(
        "invalid label name {label:?} on metric {metric:?}: {problem}; a label name starts with a letter or '_' and holds only letters, digits, '_' or '.'"
    )]
    InvalidLabelName {
        /// The metric being registered.
        metric: String,
        /// The rejected label name.
        label: String,
        /// What exactly is wrong.
        problem: String,
    },
    /// Bucket boundaries were asked for a histogram already registered without them.
    #[error(
        "histogram {name:?} is already registered, so the bucket boundaries {missing:?} cannot be added: add them before the family is first built (load the objectives before installing the instrumentation)"
    )]
    BoundsTooLate {
        /// The histogram.
        name: String,
        /// The boundaries it lacks.
        missing: Vec<f64>,
    },
    /// The same name was registered before with a different definition.
    #[error(
        "metric {name:?} is already registered as {existing}; it cannot be registered again as {requested}: register it with the same kind, unit and label names, or pick another name"
    )]
    Conflict {
        /// The contested name.
        name: String,
        /// The existing definition.
        existing: String,
        /// The definition that was refused.
        requested: String,
    },
    /// Another family, under another name, renders to the same Prometheus name (`a.b` and
    /// `a_b`, or `x` with unit seconds and `x.seconds`): both would be exported as one family,
    /// which Prometheus refuses for the whole scrape.
    #[error(
        "metric {name:?} would be exported to Prometheus as {prometheus:?}, the name of the registered metric {existing:?}; names that differ only in characters outside [A-Za-z0-9] (or by a unit suffix or `_total`) render alike: rename one of them"
    )]
    NameCollision {
        /// The refused name.
        name: String,
        /// The registered family's name.
        existing: String,
        /// The Prometheus name both render to.
        prometheus: String,
    },
    /// `with()` was given a number of label values that does not match the family.
    #[error(
        "metric {metric:?} declares {expected} label(s) {names:?} but {got} value(s) were given; pass one value per declared label, in order"
    )]
    LabelCount {
        /// The metric.
        metric: String,
        /// Declared label names.
        names: Vec<String>,
        /// Declared label count.
        expected: usize,
        /// Values passed.
        got: usize,
    },
    /// A histogram configuration is unusable.
    #[error("invalid histogram configuration for {metric:?}: {problem}")]
    InvalidHistogram {
        /// The metric.
        metric: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A family passed to [`Registry::widen_family`](crate::Registry::widen_family) is not the
    /// one the registry holds under its name.
    #[error(
        "metric {name:?} is not registered in this registry as the family given (it was removed or replaced, or belongs to another registry); widen the family the registry holds now, or register the name again"
    )]
    NotRegistered {
        /// The metric.
        name: String,
    },
    /// A static family could not be registered in the global registry.
    #[error("static metric {name:?} could not be registered: {reason}")]
    Static {
        /// The metric.
        name: String,
        /// The underlying registration error, rendered.
        reason: String,
    },
}

impl Error {
    pub(crate) fn conflict(name: &str, existing: String, requested: String) -> Self {
        Error::Conflict {
            name: name.to_owned(),
            existing,
            requested,
        }
    }
}

/// Describes a family definition for conflict messages.
pub(crate) fn describe(
    kind: Kind,
    unit: &str,
    labels: &[std::borrow::Cow<'static, str>],
) -> String {
    format!("a {kind} with unit {unit:?} and labels {labels:?}")
}
