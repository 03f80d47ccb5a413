//! The series of the things a reading lists (CPUs, filesystems, disks, interfaces, cgroups),
//! kept while the readings list them, so that memory stays bounded as they come and go.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries by key, each marked with the last reading (its generation) that listed it.
pub(crate) struct Entries<K, E> {
    map: HashMap<K, (u64, E)>,
}

impl<K: Eq + Hash, E> Entries<K, E> {
    pub(crate) fn new() -> Self {
        Entries {
            map: HashMap::new(),
        }
    }

    /// The entry of `key`, if there is one, marked as listed by the reading `generation`.
    pub(crate) fn get_seen(&mut self, key: &K, generation: u64) -> Option<&mut E> {
        let (seen, entry) = self.map.get_mut(key)?;
        *seen = generation;
        Some(entry)
    }

    /// The entry of `key`, made by `new` if there is none yet, marked as listed by the reading
    /// `generation`.
    pub(crate) fn seen_or_insert_with(
        &mut self,
        key: K,
        generation: u64,
        new: impl FnOnce(&K) -> E,
    ) -> &mut E {
        let (seen, entry) = self
            .map
            .entry(key)
            .or_insert_with_key(|k| (generation, new(k)));
        *seen = generation;
        entry
    }

    /// One reading (`generation`) of a list of items, each with its `key`: `update`s the entry
    /// of each item listed before, adds the one `new` makes of an item listed for the first time
    /// (it starts from that reading), and removes the entries of the keys no longer listed,
    /// handing each to `removed` (to remove its series). A key is cloned only for a new entry.
    pub(crate) fn update_listed<T>(
        &mut self,
        generation: u64,
        listed: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &K,
        update: impl Fn(&mut E, &T),
        new: impl Fn(&T) -> E,
        removed: impl FnMut(&K, &E),
    ) where
        K: Clone,
    {
        for item in listed {
            match self.map.get_mut(key(&item)) {
                Some((seen, entry)) => {
                    *seen = generation;
                    update(entry, &item);
                }
                None => {
                    self.map
                        .insert(key(&item).clone(), (generation, new(&item)));
                }
            }
        }
        self.remove_unseen(generation, removed);
    }

    /// Removes the entries that the reading `generation` did not list, handing each to
    /// `removed` (to remove its series).
    pub(crate) fn remove_unseen(&mut self, generation: u64, mut removed: impl FnMut(&K, &E)) {
        self.map.retain(|key, (seen, entry)| {
            let keep = *seen == generation;
            if !keep {
                removed(key, entry);
            }
            keep
        });
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &E)> {
        self.map.iter().map(|(k, (_, e))| (k, e))
    }
}
