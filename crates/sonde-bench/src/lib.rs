//! Shared helpers for the sonde benchmarks.
