//! End-to-end tests of sonde and the peers they run against (Prometheus harness, OTLP
//! receiver, CloudWatch endpoint), shared by every test rather than rewritten per crate.
#![warn(missing_docs)]
