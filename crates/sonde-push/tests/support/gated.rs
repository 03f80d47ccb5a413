//! A test sink shared by the unit tests (`src/lib.rs`) and the integration tests: it refuses
//! (retryably) while `down` is set, and keeps the first number of each batch it takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Outcome, Sink};

/// Refuses (retryably) while `down` is set; then keeps each batch's first number in `got`.
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
        self.got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch.first());
        Outcome::Success {
            rejected: 0,
            message: String::new(),
        }
    }
}
