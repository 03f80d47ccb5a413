//! AWS CloudWatch export for sonde (work in progress).
#![warn(missing_docs)]

pub mod datum;
