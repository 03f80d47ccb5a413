//! `/ready`: the readiness the application declares, plus the exporters' state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Conditions held at most; a new name past this is folded into one condition that keeps the
/// server not ready, so a program that invents names cannot grow memory without bound.
pub const MAX_CONDITIONS: usize = 256;

/// The name of the condition that stands for the names refused past [`MAX_CONDITIONS`].
const TOO_MANY: &str = "too_many_conditions";

/// Bytes of a reason kept (longer ones are cut at a character boundary).
const MAX_REASON_BYTES: usize = 1024;

/// The readiness the application declares, served on `/ready` with the exporters' state.
///
/// The application is ready while no condition is declared not ready. Name a condition after
/// what it waits for (`"cache"`, `"database"`, `"draining"`), declare it not ready with a
/// reason the operator can act on, and ready again when it is. A handle is cheap to clone
/// and can be shared between threads; every clone flips the same conditions.
///
/// ```
/// use std::io::{Read as _, Write as _};
/// use sonde_prometheus::{PrometheusBuilder, Readiness};
///
/// // Not ready from the first request on: the cache is still loading.
/// let readiness = Readiness::new();
/// readiness.not_ready("cache", "warming up: 0 of 5000 keys loaded");
/// let server = PrometheusBuilder::new()
///     .registry(sonde_core::Registry::new())
///     .bind("127.0.0.1:0".parse().unwrap())
///     .readiness(readiness.clone())
///     .install()?;
///
/// let status = |path: &str| -> std::io::Result<String> {
///     let mut s = std::net::TcpStream::connect(server.local_addr())?;
///     write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
///     let mut reply = String::new();
///     s.read_to_string(&mut reply)?;
///     Ok(reply.lines().next().unwrap_or_default().to_owned())
/// };
/// assert!(status("/ready")?.contains("503"));
/// assert!(status("/health")?.contains("200"), "alive all the same");
///
/// readiness.ready("cache");
/// assert!(status("/ready")?.contains("200"));
/// sonde_core::Component::shutdown(&server, std::time::Duration::from_secs(5))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<String, NotReady>>>,
}

/// Why a condition is not ready, and since when.
#[derive(Clone, Debug)]
pub(crate) struct NotReady {
    pub(crate) reason: String,
    pub(crate) since_unix_seconds: f64,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("not_ready", &self.not_ready_conditions())
            .finish()
    }
}

impl Readiness {
    /// A readiness with no condition: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `condition` not ready, with `reason` (shown on `/ready`). Calling it again
    /// replaces the reason and keeps the time it became not ready.
    pub fn not_ready(&self, condition: impl Into<String>, reason: impl Into<String>) {
        let (condition, mut reason) = (condition.into(), reason.into());
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let mut map = self.lock();
        if let Some(c) = map.get_mut(&condition) {
            c.reason = reason;
            return;
        }
        let (condition, reason) = if map.len() >= MAX_CONDITIONS {
            static WARNED: sonde_core::diag::RateLimit =
                sonde_core::diag::RateLimit::new(std::time::Duration::from_secs(60));
            if WARNED.hit().is_some() {
                sonde_core::diag::warn(format_args!(
                    "readiness: more than {MAX_CONDITIONS} conditions are not ready; {condition:?} is counted under {TOO_MANY:?}, which stays not ready. Use a fixed set of condition names"
                ));
            }
            (
                TOO_MANY.to_owned(),
                format!(
                    "more than {MAX_CONDITIONS} conditions were declared not ready (the latest: {condition:?}); use a fixed set of condition names"
                ),
            )
        } else {
            (condition, reason)
        };
        map.entry(condition).or_insert_with(|| NotReady {
            reason,
            since_unix_seconds: now_unix_seconds(),
        });
    }

    /// Declares `condition` ready (forgetting its reason). A condition never declared is ready.
    pub fn ready(&self, condition: &str) {
        self.lock().remove(condition);
    }

    /// Declares `condition` ready when `ready` is true, not ready with `reason` otherwise: for
    /// a state checked in a loop (`set("database", pool.is_up(), "no database connection")`).
    pub fn set(&self, condition: impl Into<String>, ready: bool, reason: impl Into<String>) {
        let condition = condition.into();
        if ready {
            self.ready(&condition);
        } else {
            self.not_ready(condition, reason);
        }
    }

    /// Whether no condition is declared not ready (the exporters' state is not part of it;
    /// `/ready` adds that).
    pub fn is_ready(&self) -> bool {
        self.lock().is_empty()
    }

    /// The conditions declared not ready, as `(condition, reason)`, sorted by condition.
    pub fn not_ready_conditions(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.reason.clone()))
            .collect()
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, NotReady> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NotReady>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.conditions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_flip_and_stay_bounded() {
        let r = Readiness::new();
        assert!(r.is_ready());
        r.not_ready("cache", "warming up");
        r.not_ready("cache", "warming up: half done");
        assert!(!r.is_ready());
        assert_eq!(
            r.not_ready_conditions(),
            vec![("cache".to_owned(), "warming up: half done".to_owned())]
        );
        r.set("cache", true, "unused");
        assert!(r.is_ready());
        let ((), lines) = sonde_core::testing::capture_diagnostics(|| {
            for i in 0..(MAX_CONDITIONS + 10) {
                r.not_ready(format!("c{i}"), "x".repeat(5000));
            }
        });
        let held = r.not_ready_conditions();
        assert_eq!(held.len(), MAX_CONDITIONS + 1);
        assert!(held.iter().any(|(c, _)| c == TOO_MANY), "{held:?}");
        assert!(
            held.iter()
                .all(|(_, reason)| reason.len() <= MAX_REASON_BYTES)
        );
        assert!(!lines.is_empty());
    }
}
