//! A metrics::Recorder that sends everything instrumented with the metrics crate's macros into a sonde registry.
#![warn(missing_docs)]
