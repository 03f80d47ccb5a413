//! The r2d2 adapter: pool sizes and checkout events.

use std::sync::Arc;

use super::{PoolMetrics, PoolStats};

/// [`PoolStats`] of an r2d2 pool.
pub struct R2d2Stats<M: r2d2::ManageConnection>(pub r2d2::Pool<M>);

impl<M: r2d2::ManageConnection> PoolStats for R2d2Stats<M> {
    idle_and_used_from_state!();
    fn max(&self) -> u64 {
        u64::from(self.0.max_size())
    }
}

/// An r2d2 event handler recording checkout waits and timeouts into [`PoolMetrics`]; give it
/// to `r2d2::Pool::builder().event_handler(...)`.
#[derive(Clone)]
pub struct R2d2Events(pub PoolMetrics);

impl std::fmt::Debug for R2d2Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("R2d2Events")
    }
}

impl r2d2::HandleEvent for R2d2Events {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        self.0.record_wait(event.duration());
    }
    fn handle_timeout(&self, _: r2d2::event::TimeoutEvent) {
        self.0.timeout();
    }
}

impl PoolMetrics {
    /// Samples an r2d2 pool's sizes at each collection.
    pub fn watch_r2d2<M: r2d2::ManageConnection>(&self, pool: &r2d2::Pool<M>) {
        self.watch(Arc::new(R2d2Stats(pool.clone())));
    }

    /// The event handler that records this pool's checkout waits and timeouts; pass it to
    /// `r2d2::Pool::builder().event_handler(Box::new(...))`.
    pub fn r2d2_events(&self) -> R2d2Events {
        R2d2Events(self.clone())
    }
}
