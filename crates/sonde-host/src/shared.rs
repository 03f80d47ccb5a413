//! What the handles of every collector of this crate share: the collection state behind a
//! lock, the flag that stops it, and the guard that stops it when the last handle goes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sonde_core::{CollectorGuard, Registry};

/// The state of an installed collector, shared by its handles and its collect hook.
pub(crate) struct Shared<S> {
    installed: AtomicBool,
    /// Whether a collection has finished: until then every caller waits for the one in
    /// progress, so the first scrape never shows the families before their first reading.
    collected: AtomicBool,
    /// `None` once uninstalled.
    state: Mutex<Option<S>>,
}

impl<S> Shared<S> {
    /// An installed collector's shared state.
    pub(crate) fn new(state: S) -> Arc<Self> {
        Arc::new(Shared {
            installed: AtomicBool::new(true),
            collected: AtomicBool::new(false),
            state: Mutex::new(Some(state)),
        })
    }

    /// Whether the collector still updates its families.
    pub(crate) fn is_installed(&self) -> bool {
        self.installed.load(Ordering::Relaxed)
    }

    /// Stops collecting; the series stay. Returns whether it was collecting.
    pub(crate) fn stop(&self) -> bool {
        self.installed.swap(false, Ordering::Relaxed)
    }

    /// The state, `None` once uninstalled.
    pub(crate) fn state(&self) -> MutexGuard<'_, Option<S>> {
        // Every step leaves the state usable (plain numbers and handles).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops collecting and takes the state out, for the caller to remove its series; `None`
    /// when it was already uninstalled.
    pub(crate) fn uninstall(&self) -> Option<S> {
        self.stop();
        self.state().take()
    }

    /// One collection, while installed: `update` on the state. With `wait` false (from the
    /// collect hook), a collection in progress on another thread is not waited for (it is
    /// refreshing the same values), except before the first has finished.
    pub(crate) fn collect(&self, wait: bool, update: impl FnOnce(&mut S)) {
        if !self.is_installed() {
            return;
        }
        let wait = wait || !self.collected.load(Ordering::Acquire);
        let Some(mut guard) = sonde_core::collection_lock(&self.state, wait) else {
            return;
        };
        if let Some(state) = guard.as_mut() {
            update(state);
            self.collected.store(true, Ordering::Release);
        }
    }

    /// Like [`collect`](Self::collect), and a panic in `update` does not reach the caller
    /// (a scrape, the daemon's loop): `on_panic` counts it.
    pub(crate) fn collect_catching(
        &self,
        wait: bool,
        update: impl FnOnce(&mut S),
        on_panic: impl FnOnce(&mut S),
    ) {
        self.collect(wait, |state| {
            if catch_unwind(AssertUnwindSafe(|| update(&mut *state))).is_err() {
                on_panic(state);
            }
        });
    }
}

impl<S: Send + 'static> Shared<S> {
    /// A collect hook on `registry` that runs `collect` at every collection of the registry.
    pub(crate) fn hook(
        self: &Arc<Self>,
        registry: &Registry,
        collect: impl Fn(&Self) + Send + Sync + 'static,
    ) -> CollectorGuard {
        let shared = self.clone();
        registry.register_collector(move || collect(&shared))
    }
}

/// Stops the collection, and removes the collect hook, when the last handle goes.
pub(crate) struct Running<S> {
    shared: Arc<Shared<S>>,
    hook: Option<CollectorGuard>,
    /// Logged when the last handle goes while a hook still collected: keeping the handle
    /// was probably forgotten.
    stopping: &'static str,
}

impl<S> Running<S> {
    pub(crate) fn new(
        shared: &Arc<Shared<S>>,
        hook: Option<CollectorGuard>,
        stopping: &'static str,
    ) -> Arc<Self> {
        Arc::new(Running {
            shared: shared.clone(),
            hook,
            stopping,
        })
    }
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        if self.shared.stop() && self.hook.is_some() {
            sonde_core::diag::info(format_args!("{}", self.stopping));
        }
    }
}
