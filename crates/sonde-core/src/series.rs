//! One series: its label values, identity, idle tracking and atomic storage.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::labels::{LabelIter, LabelValues};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

const OVERFLOW_BIT: u64 = 1 << 63;
const TOUCHED: u64 = 1 << 63;

/// Nanoseconds since the UNIX epoch, now.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Seconds on the process-wide monotonic clock used for idle tracking.
pub(crate) fn mono_secs() -> u64 {
    EPOCH.elapsed().as_secs()
}

/// What every series carries besides its value.
pub struct Header {
    /// Process-unique id; the top bit marks the overflow series.
    id: u64,
    pub(crate) labels: LabelValues,
    /// When the series was created, UNIX nanoseconds (the start time of cumulative points).
    created: u64,
    /// Idle tracking: last active time in `mono_secs`, plus a "looked up since" flag.
    activity: AtomicU64,
}

impl Header {
    pub(crate) fn new(labels: LabelValues, overflow: bool) -> Self {
        let id = NEXT_ID.fetch_add(1, Relaxed) | if overflow { OVERFLOW_BIT } else { 0 };
        Header {
            id,
            labels,
            created: unix_nanos(),
            activity: AtomicU64::new(mono_secs()),
        }
    }

    /// A header for `from`'s series under other label values: same id (so delta readers see
    /// one series continue) and start time.
    pub(crate) fn carried(labels: LabelValues, from: &Header) -> Self {
        Header {
            id: from.id,
            labels,
            created: from.created,
            activity: AtomicU64::new(mono_secs()),
        }
    }

    /// Process-unique series id (stable for the life of the series).
    pub fn id(&self) -> u64 {
        self.id & !OVERFLOW_BIT
    }

    /// Whether this is a family's overflow series.
    pub fn is_overflow(&self) -> bool {
        self.id & OVERFLOW_BIT != 0
    }

    /// Creation time, UNIX nanoseconds.
    pub fn created_unix_nanos(&self) -> u64 {
        self.created
    }

    /// The label values, in the family's label order.
    pub fn label_values(&self) -> LabelIter<'_> {
        self.labels.iter()
    }

    #[inline]
    pub(crate) fn touch(&self) {
        if self.activity.load(Relaxed) & TOUCHED == 0 {
            self.activity.fetch_or(TOUCHED, Relaxed);
        }
    }

    /// Marks the series active if it was looked up or is held outside the registry;
    /// returns whether it has been idle for at least `ttl` seconds.
    pub(crate) fn idle_for(&self, now: u64, held_outside: bool, ttl: u64) -> bool {
        let a = self.activity.load(Relaxed);
        if a & TOUCHED != 0 || held_outside {
            self.activity.store(now, Relaxed);
            return false;
        }
        // Both are whole seconds, cut down: one more than `ttl` apart is at least `ttl` of
        // real time (exactly `ttl` apart can be a hair over `ttl - 1`).
        now.saturating_sub(a) > ttl
    }
}

/// A series: header plus the instrument's atomic storage.
pub struct Series<C> {
    pub(crate) header: Header,
    pub(crate) core: C,
}

impl<C> Series<C> {
    pub(crate) fn new(labels: LabelValues, overflow: bool, core: C) -> Arc<Self> {
        Arc::new(Series {
            header: Header::new(labels, overflow),
            core,
        })
    }
}

/// Type-erased access to a series' header, for snapshots.
pub trait SeriesInfo: Send + Sync {
    /// The header.
    fn header(&self) -> &Header;
}

impl<C: Send + Sync> SeriesInfo for Series<C> {
    fn header(&self) -> &Header {
        &self.header
    }
}
