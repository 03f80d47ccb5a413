//! One lifecycle for every running part of a pipeline: the sources that feed a registry
//! (StatsD, probes, scrape targets, the OTLP receiver, host and process collectors) and the
//! exporters that read it (the `/metrics` server, OTLP, CloudWatch, EMF, remote write).
//!
//! A component starts when its builder's `install()` (or `start()`) returns its handle, runs
//! while the handle lives, and stops when the handle drops. [`Component`] is what every such
//! handle offers on top: [`flush`](Component::flush) and [`shutdown`](Component::shutdown)
//! within a deadline, so a program (or the agent) can stop a list of them in one loop.
//!
//! ```
//! use std::time::Duration;
//! use sonde_core::{Component, ComponentError};
//!
//! /// Stops every component, each within what is left of one deadline, and reports them all.
//! fn stop_all(parts: &[Box<dyn Component>], timeout: Duration) -> Vec<ComponentError> {
//!     let deadline = std::time::Instant::now() + timeout;
//!     parts
//!         .iter()
//!         .filter_map(|c| c.shutdown(deadline.saturating_duration_since(std::time::Instant::now())).err())
//!         .collect()
//! }
//! assert!(stop_all(&[], Duration::from_secs(1)).is_empty());
//! ```

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running source or exporter.
///
/// Both calls block the calling thread for at most about `timeout` and may be called from any
/// thread, in any order, any number of times; a second `shutdown` returns `Ok`. After
/// `shutdown`, a component that delivers or receives (the push exporters, the StatsD server)
/// refuses a `flush` with an error saying it was shut down; the others have nothing to flush
/// and return `Ok`. Neither call removes series from the registry; the handles of sources
/// offer `uninstall()` for that (before `shutdown`: a stopped scrape source keeps its series).
pub trait Component: Send + Sync {
    /// A short name for logs and errors, such as `otlp`, `statsd` or `prometheus` (an
    /// exporter's name is also its `exporter` label on the `sonde.exporter.*` self-metrics).
    fn name(&self) -> &'static str;

    /// Finishes what was accepted so far: an exporter delivers everything collected up to now,
    /// a source records everything it has received. Errors if that did not complete within
    /// `timeout` or something was dropped meanwhile (the error says what).
    ///
    /// The default is for a component that records or delivers everything as it arrives
    /// (a receiver, probes, a scrape): it has nothing to do and returns `Ok`.
    fn flush(&self, timeout: Duration) -> Result<(), ComponentError> {
        let _ = timeout;
        Ok(())
    }

    /// Stops the component after a last [`flush`](Self::flush) within `timeout`: listeners
    /// close, threads end. What an exporter still held at the deadline is dropped and counted
    /// (`sonde.exporter.dropped_points`, reason `shutdown`).
    fn shutdown(&self, timeout: Duration) -> Result<(), ComponentError>;
}

/// A shared handle is the component it shares (a timer thread and the agent holding one
/// writer, say).
impl<T: Component + ?Sized> Component for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn flush(&self, timeout: Duration) -> Result<(), ComponentError> {
        (**self).flush(timeout)
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), ComponentError> {
        (**self).shutdown(timeout)
    }
}

/// Implements [`Component`] for a handle by delegating name, flush and shutdown to one of its
/// fields (a [`ComponentThread`], a push exporter's engine), after the doc comments given:
///
/// ```
/// use sonde_core::ComponentThread;
///
/// struct Listener {
///     running: ComponentThread,
/// }
///
/// sonde_core::component_via!(
///     /// Records as it receives: `shutdown` stops the listener thread.
///     Listener => running
/// );
///
/// let (tx, rx) = std::sync::mpsc::channel::<()>();
/// let thread = std::thread::spawn(move || drop(rx.recv()));
/// let l = Listener { running: ComponentThread::new("listener", move || drop(tx), thread) };
/// use sonde_core::Component as _;
/// assert_eq!(l.name(), "listener");
/// l.shutdown(std::time::Duration::from_secs(1)).unwrap();
/// assert!(!l.running.is_running());
/// ```
#[macro_export]
macro_rules! component_via {
    ($(#[$doc:meta])* $handle:ty => $field:ident) => {
        $(#[$doc])*
        impl $crate::Component for $handle {
            fn name(&self) -> &'static str {
                $crate::Component::name(&self.$field)
            }

            fn flush(&self, timeout: ::std::time::Duration) -> Result<(), $crate::ComponentError> {
                $crate::Component::flush(&self.$field, timeout)
            }

            fn shutdown(
                &self,
                timeout: ::std::time::Duration,
            ) -> Result<(), $crate::ComponentError> {
                $crate::Component::shutdown(&self.$field, timeout)
            }
        }
    };
}

/// A component's background thread and how to tell it to stop, for a handle that stops it on
/// [`shutdown`](Component::shutdown) and on drop alike: the first [`stop`](Self::stop) signals
/// the thread and waits for it to end; later calls do nothing. Dropping it stops the thread too.
///
/// It is the [`Component`] of a source that records everything as it arrives (a receiver,
/// probes): `flush` has nothing to do, `shutdown` is [`stop`](Self::stop); its handle
/// delegates to it with [`component_via!`](crate::component_via).
pub struct ComponentThread {
    /// The component's [`name`](Component::name).
    name: &'static str,
    /// The signal and the thread; taken by the first stop.
    running: Mutex<Option<(StopSignal, JoinHandle<()>)>>,
}

/// What tells a [`ComponentThread`] to stop.
type StopSignal = Box<dyn FnOnce() + Send>;

impl ComponentThread {
    /// The thread of component `name`, which ends once `signal` has been called (a channel's
    /// send, say).
    pub fn new(
        name: &'static str,
        signal: impl FnOnce() + Send + 'static,
        thread: JoinHandle<()>,
    ) -> ComponentThread {
        ComponentThread {
            name,
            running: Mutex::new(Some((Box::new(signal), thread))),
        }
    }

    /// Signals the thread to stop and waits for it to end (at once when it already has).
    pub fn stop(&self) {
        // Taken under the lock, joined outside it: a concurrent stop returns at once.
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((signal, thread)) = running {
            signal();
            let _ = thread.join();
        }
    }

    /// Whether no stop has been asked yet.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// Everything was recorded as it arrived: `flush` has nothing to do; `shutdown` stops the
/// thread and waits for it (the thread bounds its own wait for work in progress).
impl Component for ComponentThread {
    fn name(&self) -> &'static str {
        self.name
    }

    fn shutdown(&self, _timeout: Duration) -> Result<(), ComponentError> {
        self.stop();
        Ok(())
    }
}

impl Drop for ComponentThread {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for ComponentThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentThread")
            .field("name", &self.name)
            .field("running", &self.is_running())
            .finish()
    }
}

/// Why a [`Component`]'s flush or shutdown did not finish everything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{component}: {message}")]
pub struct ComponentError {
    component: &'static str,
    message: String,
}

impl ComponentError {
    /// An error of `component` ([`Component::name`]) saying what happened.
    pub fn new(component: &'static str, message: impl std::fmt::Display) -> ComponentError {
        ComponentError {
            component,
            message: message.to_string(),
        }
    }

    /// The name of the component that failed.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// What happened, without the component's name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_its_component() {
        let e = ComponentError::new("otlp", "2 requests were still waiting after 1s");
        assert_eq!(
            e.to_string(),
            "otlp: 2 requests were still waiting after 1s"
        );
        assert_eq!(e.component(), "otlp");
        assert_eq!(e.message(), "2 requests were still waiting after 1s");
    }

    #[test]
    fn a_component_thread_stops_once() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let t = ComponentThread::new("test", move || drop(tx), thread);
        assert!(t.is_running());
        t.stop();
        assert!(!t.is_running());
        t.stop();
    }
}
