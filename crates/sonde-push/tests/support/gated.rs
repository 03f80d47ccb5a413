//! A test sink shared by the unit tests (`src/lib.rs`) and the integration tests: it refuses
//! (retryably) while `down` is set, and keeps every number of each batch it takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Outcome, Sink};

/// Refuses (retryably) while `down` is set; then appends every number of each batch to `got`.
/// Panics on an empty batch (the engine never sends one) or a poisoned `got`.
pub struct Gated {
    pub down: Arc<AtomicBool>,
    pub got: Arc<Mutex<Vec<u64>>>,
}

impl Sink for Gated {
    type Batch = Vec<u64>;
    async fn send(&mut self, batch: &Vec<u64>, _: Duration) -> Outcome {
        if self.down.load(Ordering::SeqCst) {
            return Outcome::Retry {
                error: "down".into(),
                after: None,
            };
        }
        assert!(!batch.is_empty(), "the engine sent an empty batch");
        self.got.lock().unwrap().extend(batch);
        Outcome::Success {
            rejected: 0,
            message: String::new(),
        }
    }
}
