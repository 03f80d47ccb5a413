//! The per-key handle cache: `metrics` macros call `register_*` on every invocation, so the
//! handle for a key is resolved once and then found by the key's precomputed hash.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use metrics::Key;

const SHARDS: usize = 8;

/// Uses the hash `metrics::Key` computes when it is built (its `Hash` impl writes just that
/// `u64`), with a cheap final mix so both ends of the word are usable by the table.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHash;

pub(crate) struct KeyHasher(u64);

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let p = u128::from(self.0) * u128::from(MIX);
        (p as u64) ^ ((p >> 64) as u64)
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(23) ^ v;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Key`; well defined anyway.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }
}

// `Key` is flagged by clippy as a mutable key type; its hash and equality never change.
#[allow(clippy::mutable_key_type)]
type Map<H> = HashMap<Key, H, KeyHash>;

pub(crate) struct KeyCache<H> {
    shards: [RwLock<Map<H>>; SHARDS],
}

impl<H: Clone> KeyCache<H> {
    pub(crate) fn new() -> Self {
        KeyCache {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::with_hasher(KeyHash))),
        }
    }

    fn shard(&self, key: &Key) -> &RwLock<Map<H>> {
        &self.shards[(key.get_hash() >> 40) as usize % SHARDS]
    }

    #[inline]
    pub(crate) fn get(&self, key: &Key) -> Option<H> {
        read(self.shard(key)).get(key).cloned()
    }

    /// The cached handle for `key`, or `make(insert)`'s, where `insert` says whether the new
    /// handle will be cached (`allow()` was true). `make` runs under the shard's write lock,
    /// so it runs once per cached key.
    #[cold]
    pub(crate) fn get_or_make(
        &self,
        key: &Key,
        allow: impl FnOnce() -> bool,
        make: impl FnOnce(bool) -> H,
    ) -> H {
        let mut map = write(self.shard(key));
        if let Some(h) = map.get(key) {
            return h.clone();
        }
        let insert = allow();
        let h = make(insert);
        if insert {
            map.insert(key.clone(), h.clone());
        }
        h
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // Inserts are single calls: a panic elsewhere cannot leave a map half-updated.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_any_label_order() {
        let cache: KeyCache<u32> = KeyCache::new();
        let a = Key::from_parts(
            "x",
            vec![metrics::Label::new("a", "1"), metrics::Label::new("b", "2")],
        );
        let b = Key::from_parts(
            "x",
            vec![metrics::Label::new("b", "2"), metrics::Label::new("a", "1")],
        );
        assert_eq!(cache.get_or_make(&a, || true, |_| 7), 7);
        assert_eq!(cache.get(&b), Some(7));
        assert_eq!(cache.get_or_make(&b, || true, |_| 8), 7);
        let c = Key::from_name("y");
        assert_eq!(cache.get_or_make(&c, || false, u32::from), 0);
        assert_eq!(cache.get(&c), None);
        assert_eq!(cache.len(), 1);
    }
}
