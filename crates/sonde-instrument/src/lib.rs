//! Instrumentation helpers for services on sonde: cold starts and FaaS invocations, database and HTTP client timings, caches, connection pools, phase timers, business events.
#![warn(missing_docs)]
