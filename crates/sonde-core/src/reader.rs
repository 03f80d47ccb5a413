//! Readers: each consumer's view of a registry, cumulative or delta with its own memory.
//!
//! The registry's `snapshot` and `reader` live here, next to the reader they create, so that
//! the registry and the snapshot types do not depend on readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::kind::Kind;
use crate::number::Number;
use crate::registry::Registry;
use crate::select::Selection;
use crate::snapshot::{Point, Snapshot, Temporality};

impl Registry {
    /// A cumulative snapshot of every family.
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        self.read_into(&mut snapshot, None);
        snapshot
    }

    /// A consumer with its own temporality; delta readers remember what they read last.
    pub fn reader(&self, temporality: Temporality) -> Reader {
        Reader::new(self.clone(), temporality)
    }

    /// The reader of a push exporter: `selection` applied and, with delta temporality,
    /// up-down counters kept cumulative (OTLP's `delta` preference: their changes alone say
    /// nothing of the level) and the deltas continuing `continue_from` (a replaced exporter's
    /// [`Reader::delta_state`]), so each change is exported once.
    pub fn export_reader(
        &self,
        temporality: Temporality,
        selection: Selection,
        continue_from: Option<&DeltaState>,
    ) -> Reader {
        let reader = self.reader(temporality).with_selection(selection);
        if temporality != Temporality::Delta {
            return reader;
        }
        let reader = reader.with_cumulative_kinds(&[Kind::UpDownCounter]);
        match continue_from {
            Some(state) => reader.continue_from(state),
            None => reader,
        }
    }
}

/// A consumer of a registry: an exporter, with its own temporality and, for deltas, its own
/// memory of what it read last, so consumers with different intervals never disturb each other.
pub struct Reader {
    registry: Registry,
    temporality: Temporality,
    memory: Arc<Mutex<Memory>>,
    cumulative_kinds: Vec<Kind>,
    selection: Option<Selection>,
}

/// What a delta reader read last.
#[derive(Default)]
struct Memory {
    previous: HashMap<u64, Point>,
    last_collect: u64,
}

/// A delta reader's memory of what it read last, handed to the reader that replaces it (an
/// exporter restarted with new settings) so the new one continues where the old one is: every
/// change is reported once, by one of them, instead of the new one's first collection
/// repeating every counter's total. Readers that share it may collect in any order, also at
/// the same time.
#[derive(Clone)]
pub struct DeltaState(Arc<Mutex<Memory>>);

impl std::fmt::Debug for DeltaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("DeltaState")
            .field("series", &m.previous.len())
            .field("last_collect", &m.last_collect)
            .finish()
    }
}

impl Reader {
    pub(crate) fn new(registry: Registry, temporality: Temporality) -> Self {
        Reader {
            registry,
            temporality,
            memory: Arc::default(),
            cumulative_kinds: Vec::new(),
            selection: None,
        }
    }

    /// This reader's delta memory, for [`continue_from`](Self::continue_from) in its successor.
    pub fn delta_state(&self) -> DeltaState {
        DeltaState(self.memory.clone())
    }

    /// Shares `state` (another delta reader's [`delta_state`](Self::delta_state)): this reader's
    /// first collection reports the changes since that reader's last one, not since each series
    /// started. Give it to readers of the same registry that keep the same kinds cumulative.
    pub fn continue_from(mut self, state: &DeltaState) -> Self {
        self.memory = state.0.clone();
        self
    }

    /// Keeps families of these kinds cumulative in a delta reader: OTLP's `delta` temporality
    /// preference wants up-down counters cumulative, since their changes alone say nothing of
    /// the level. Check per family with [`Snapshot::is_delta`].
    pub fn with_cumulative_kinds(mut self, kinds: &[Kind]) -> Self {
        self.cumulative_kinds = kinds.to_vec();
        self
    }

    /// Applies `selection` to every collection: families not selected are not read, and
    /// label conditions and aggregation apply to the points read (deltas already computed, so
    /// aggregated deltas are the sums of the members' changes).
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = (!selection.is_everything()).then_some(selection);
        self
    }

    /// This reader's temporality.
    pub fn temporality(&self) -> Temporality {
        self.temporality
    }

    /// Reads every family. For delta readers, each point is the change since this reader's
    /// previous collection (for a series it has not seen, since the series was created).
    pub fn collect(&mut self) -> Snapshot {
        let mut snapshot = Snapshot::default();
        self.collect_into(&mut snapshot);
        snapshot
    }

    /// Like [`collect`](Self::collect), reusing `snapshot`'s allocations.
    pub fn collect_into(&mut self, snapshot: &mut Snapshot) {
        self.collect_unselected(snapshot);
        if let Some(selection) = &self.selection {
            selection.apply(snapshot);
        }
    }

    fn collect_unselected(&mut self, snapshot: &mut Snapshot) {
        if self.temporality == Temporality::Cumulative {
            self.registry.read_into(snapshot, self.selection.as_ref());
            snapshot.temporality = self.temporality;
            snapshot.cumulative_kinds.clone_from(&self.cumulative_kinds);
            return;
        }
        // Read under the memory's lock, so readers sharing it take turns whole: a read older
        // than the memory would come out negative.
        let memory = self.memory.clone();
        let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
        self.registry.read_into(snapshot, self.selection.as_ref());
        snapshot.temporality = self.temporality;
        snapshot.cumulative_kinds.clone_from(&self.cumulative_kinds);
        let now = snapshot.time_unix_nanos;
        let mut seen = HashMap::with_capacity(memory.previous.len());
        for family in &mut snapshot.families {
            if self.cumulative_kinds.contains(&family.meta.kind) {
                continue;
            }
            for s in &mut family.series {
                let id = s.series.header().id();
                let cumulative = std::mem::replace(&mut s.point, Point::Gauge(Number::U64(0)));
                s.point = match memory.previous.get(&id) {
                    Some(prev) => {
                        s.start_unix_nanos = memory.last_collect;
                        cumulative.minus(prev)
                    }
                    None => cumulative.clone(),
                };
                if !matches!(cumulative, Point::Gauge(_)) {
                    seen.insert(id, cumulative);
                }
            }
        }
        // Series that expired are forgotten with the old map.
        memory.previous = seen;
        memory.last_collect = now;
    }
}
