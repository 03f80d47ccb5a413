//! Helpers shared by the receiver's tests.
#![allow(dead_code, clippy::unwrap_used)]

use sonde_core::Registry;
use sonde_otlp_receiver::{OtlpReceiver, OtlpReceiverBuilder};

/// A receiver taking OTLP over HTTP on a free loopback port, recording into `registry`.
pub fn http_receiver(registry: &Registry) -> OtlpReceiver {
    OtlpReceiverBuilder::new()
        .http("127.0.0.1:0")
        .registry(registry.clone())
        .start()
        .unwrap()
}
