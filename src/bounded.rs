//! A bounded in-memory map whose entries carry their own deadline: the store behind the
//! failure and account trackers, which hold up to millions of small histories and are read or
//! written on every login. It is not a cache library on purpose: moka spent about 370 bytes of
//! bookkeeping on each entry and made every update clone the history it changed
//! (docs/BENCHMARKS.md), where this map spends about 30 and changes entries in place.
//!
//! Entries live in shards, each a `Mutex` around an `IndexMap` that grows to its share of
//! the bound. An entry is gone for readers once its deadline has passed (the deadline is
//! a `Timestamp` the caller computes, so tests drive time without sleeping); expired entries
//! are dropped by `sweep` and whenever their shard needs room. A full shard makes room as Redis
//! does: it samples a few entries and evicts the one whose deadline comes first, an expired
//! one if it finds any. What is evicted is only counting history, never a ban.
//!
//! Keys are hashed by `hashing::Keyed` (foldhash with a secret key), for the shard and again in
//! the shard's map.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use indexmap::{Equivalent, IndexMap};

use crate::clock::Timestamp;
use crate::hashing::Keyed;

/// Why an entry left the map without being removed by its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The map was full and the entry was the least needed of a sample.
    Capacity,
    /// Its deadline had passed.
    Expired,
}

/// What an update wants done with the entry it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Keep it until the deadline.
    KeepUntil(Timestamp),
    /// Keep it until the deadline it had.
    Unchanged,
    Remove,
}

struct Slot<V> {
    value: V,
    deadline: Timestamp,
}

struct Shard<K, V> {
    entries: IndexMap<K, Slot<V>, Keyed>,
    /// State of the generator that picks eviction samples (xorshift: cheap, and good enough
    /// to spread the samples over the shard).
    sampler: u64,
}

/// Entries sampled to choose one to evict.
const EVICTION_SAMPLES: usize = 5;
/// Entries a shard holds at most: 7/16 of a power of two, so that a full shard's index table,
/// once churn has doubled it, is half full and clears its tombstones in place from then on.
/// Tables start empty and grow with their shard. Reserved at the bound from the start (as
/// they were until issue 21), every shard's table was written whole at once (hashbrown marks
/// each slot empty), 9 MiB of a 1,000,000-source map before its first entry, and 10 MiB more
/// once it held 1,000,000; and its few live entries were spread over megabytes, so a probe
/// missed the cache (a probe took twice as long in a micro-benchmark, though the login mix
/// measured no difference). A shard pays for growing once per doubling, a copy of at most its
/// own 28,672 slots (docs/BENCHMARKS.md).
const SHARD_CAPACITY: usize = 14_336;
const MIN_SHARDS: usize = 16;
/// Sweeping visits the shards in this many turns, so one call holds each lock briefly and
/// touches a fraction of the map.
const SWEEP_TURNS: usize = 12;

pub struct BoundedMap<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    per_shard: usize,
    /// Picks the shard; the shards' maps hash again with their own keys.
    shard_hasher: Keyed,
    /// The next shard `sweep` visits.
    sweep_cursor: AtomicUsize,
    on_evict: Box<dyn Fn(Eviction) + Send + Sync>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq, V: Default> BoundedMap<K, V> {
    /// A map of at most `capacity` entries (at least one per shard). `on_evict` is told of
    /// every entry that leaves because it expired or made room.
    pub fn new(capacity: u64, on_evict: impl Fn(Eviction) + Send + Sync + 'static) -> BoundedMap<K, V> {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        let shard_count = capacity.div_ceil(SHARD_CAPACITY).clamp(MIN_SHARDS, 1 << 16);
        let per_shard = (capacity / shard_count).max(1);
        let shards = (0..shard_count)
            .map(|i| {
                Mutex::new(Shard {
                    entries: IndexMap::with_hasher(Keyed::default()),
                    sampler: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                })
            })
            .collect();
        BoundedMap {
            shards,
            per_shard,
            shard_hasher: Keyed::default(),
            sweep_cursor: AtomicUsize::new(0),
            on_evict: Box::new(on_evict),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>> {
        let index = self.shard_hasher.hash_one(key) % self.shards.len() as u64;
        lock(&self.shards[index as usize])
    }

    /// Reads the live entry of `key`.
    pub fn get<Q, R>(&self, key: &Q, now: Timestamp, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let shard = self.shard(key);
        shard.entries.get(key).filter(|slot| slot.deadline > now).map(|slot| read(&slot.value))
    }

    /// Changes the entry of `key`, starting from `V::default()` when there is none (or it has
    /// expired). `change` returns its result and the entry's new deadline.
    pub fn upsert<R>(&self, key: K, now: Timestamp, change: impl FnOnce(&mut V) -> (R, Timestamp)) -> R {
        let mut shard = self.shard(&key);
        let index = match shard.entries.get_index_of(&key) {
            Some(index) => {
                let slot = &mut shard.entries[index];
                if slot.deadline <= now {
                    slot.value = V::default();
                    (self.on_evict)(Eviction::Expired);
                }
                index
            }
            None => {
                if shard.entries.len() >= self.per_shard {
                    self.make_room(&mut shard, now);
                }
                shard.entries.insert_full(key, Slot { value: V::default(), deadline: now }).0
            }
        };
        let slot = &mut shard.entries[index];
        let (result, deadline) = change(&mut slot.value);
        slot.deadline = deadline;
        result
    }

    /// Changes the live entry of `key` if there is one.
    pub fn update<Q, R>(&self, key: &Q, now: Timestamp, change: impl FnOnce(&mut V) -> (R, Then)) -> Option<R>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let mut shard = self.shard(key);
        let index = shard.entries.get_index_of(key)?;
        let slot = &mut shard.entries[index];
        if slot.deadline <= now {
            return None;
        }
        let (result, then) = change(&mut slot.value);
        match then {
            Then::KeepUntil(deadline) => slot.deadline = deadline,
            Then::Unchanged => {}
            Then::Remove => {
                shard.entries.swap_remove_index(index);
            }
        }
        Some(result)
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.shard(key).entries.swap_remove(key);
    }

    /// Evicts one entry of a full shard: an expired one of the sample, or else the one whose
    /// deadline comes first.
    fn make_room(&self, shard: &mut Shard<K, V>, now: Timestamp) {
        let len = shard.entries.len();
        if len == 0 {
            return;
        }
        let mut chosen: Option<(usize, Timestamp)> = None;
        for _ in 0..EVICTION_SAMPLES.min(len) {
            shard.sampler ^= shard.sampler << 13;
            shard.sampler ^= shard.sampler >> 7;
            shard.sampler ^= shard.sampler << 17;
            let index = (shard.sampler % len as u64) as usize;
            let deadline = shard.entries[index].deadline;
            if chosen.is_none_or(|(_, earliest)| deadline < earliest) {
                chosen = Some((index, deadline));
            }
        }
        if let Some((index, deadline)) = chosen {
            shard.entries.swap_remove_index(index);
            (self.on_evict)(if deadline <= now { Eviction::Expired } else { Eviction::Capacity });
        }
    }

    /// Drops expired entries from the next share of the shards (the whole map every
    /// `SWEEP_TURNS` calls); returns how many.
    pub fn sweep(&self, now: Timestamp) -> usize {
        self.sweep_tidying(now, |_, deadline| deadline)
    }

    /// `sweep`, and every live entry of the swept shards is handed to `tidy` on the way, which
    /// may shrink it and returns its new deadline (given the one it has).
    pub fn sweep_tidying(&self, now: Timestamp, mut tidy: impl FnMut(&mut V, Timestamp) -> Timestamp) -> usize {
        let per_turn = self.shards.len().div_ceil(SWEEP_TURNS);
        let mut dropped = 0;
        for _ in 0..per_turn {
            let index = self.sweep_cursor.fetch_add(1, Ordering::Relaxed) % self.shards.len();
            let mut shard = lock(&self.shards[index]);
            let before = shard.entries.len();
            shard.entries.retain(|_, slot| {
                if slot.deadline > now {
                    slot.deadline = tidy(&mut slot.value, slot.deadline);
                }
                slot.deadline > now
            });
            dropped += before - shard.entries.len();
        }
        for _ in 0..dropped {
            (self.on_evict)(Eviction::Expired);
        }
        dropped
    }

    /// Entries held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every live entry to the key `new_key` gives it, merging entries that land on one
    /// key with `merge` (the merged entry's deadline is `deadline_of` it), and dropping those
    /// it gives none. Holds one shard's lock at a time; for a reload, not the per-login path.
    pub fn rekey(
        &self,
        now: Timestamp,
        new_key: impl Fn(&K) -> Option<K>,
        merge: impl Fn(&mut V, V),
        deadline_of: impl Fn(&V) -> Timestamp,
    ) -> usize {
        let mut moved = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            moved.extend(shard.entries.drain(..).filter(|(_, slot)| slot.deadline > now));
        }
        let mut kept = 0;
        for (key, slot) in moved {
            let Some(key) = new_key(&key) else { continue };
            kept += 1;
            let mut slot = Some(slot);
            self.upsert(key, now, |value| {
                let Some(Slot { value: incoming, deadline }) = slot.take() else { return ((), now) };
                let current = std::mem::take(value);
                *value = incoming;
                merge(value, current);
                ((), deadline.max(deadline_of(value)))
            });
        }
        kept
    }

    /// Changes every live entry in place (one shard's lock at a time; for an admin's change,
    /// not the per-login path); `change` says whether it changed the entry. Returns the keys
    /// of those it changed. Deadlines stay as they were.
    pub fn change_all(&self, now: Timestamp, mut change: impl FnMut(&K, &mut V) -> bool) -> Vec<K>
    where
        K: Clone,
    {
        let mut changed = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for (key, slot) in shard.entries.iter_mut().filter(|(_, slot)| slot.deadline > now) {
                if change(key, &mut slot.value) {
                    changed.push(key.clone());
                }
            }
        }
        changed
    }

    /// The live entries that `keep` selects, with their keys.
    pub fn collect<R>(&self, now: Timestamp, mut keep: impl FnMut(&K, &V) -> Option<R>) -> Vec<R> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            found.extend(
                shard
                    .entries
                    .iter()
                    .filter(|(_, slot)| slot.deadline > now)
                    .filter_map(|(k, slot)| keep(k, &slot.value)),
            );
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    const T0: Timestamp = Timestamp(1_795_334_400_000);

    fn at(seconds: i64) -> Timestamp {
        Timestamp(T0.0 + seconds * 1000)
    }

    fn counting_map(capacity: u64) -> (BoundedMap<u32, u32>, Arc<[AtomicU64; 2]>) {
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let seen = counts.clone();
        let map = BoundedMap::new(capacity, move |why| {
            seen[if why == Eviction::Capacity { 0 } else { 1 }].fetch_add(1, Ordering::Relaxed);
        });
        (map, counts)
    }

    #[test]
    fn an_entry_lives_until_its_deadline_and_an_update_moves_the_deadline() {
        let (map, _) = counting_map(100);
        map.upsert(7, at(0), |v| {
            *v += 1;
            ((), at(60))
        });
        assert_eq!(map.get(&7, at(59), |v| *v), Some(1));
        assert_eq!(map.get(&7, at(60), |v| *v), None, "gone at the deadline");
        assert_eq!(map.update(&7, at(61), |v| (*v, Then::KeepUntil(at(500)))), None, "expired entries are not updated");
        let count = map.upsert(7, at(61), |v| {
            *v += 1;
            (*v, at(120))
        });
        assert_eq!(count, 1, "an expired entry starts afresh");
        map.update(&7, at(100), |_| ((), Then::KeepUntil(at(300))));
        assert_eq!(map.get(&7, at(200), |v| *v), Some(1));
        map.update(&7, at(200), |_| ((), Then::Remove));
        assert_eq!(map.get(&7, at(200), |v| *v), None);
    }

    #[test]
    fn the_map_never_holds_more_than_its_capacity_and_counts_what_it_evicts() {
        let (map, counts) = counting_map(1_000);
        for key in 0..100_000u32 {
            map.upsert(key, at(0), |v| {
                *v = key;
                ((), at(3600))
            });
            assert!(map.len() <= 1_000);
        }
        assert!(map.len() >= 900, "the shards fill nearly evenly: {}", map.len());
        assert_eq!(counts[0].load(Ordering::Relaxed) as usize, 100_000 - map.len());
    }

    #[test]
    fn making_room_evicts_the_entries_needed_least() {
        let (map, _) = counting_map(10_000);
        // Half the entries are needed for a day, half for a minute; a flood of newcomers then
        // pushes most of the short-lived ones out first.
        for key in 0..10_000u32 {
            let deadline = if key % 2 == 0 { at(86_400) } else { at(60) };
            map.upsert(key, at(0), |_| ((), deadline));
        }
        for key in 10_000..13_000u32 {
            map.upsert(key, at(1), |_| ((), at(86_400)));
        }
        let long_lived_kept = (0..10_000u32).step_by(2).filter(|k| map.get(k, at(2), |_| ()).is_some()).count();
        assert!(long_lived_kept > 4_500, "only {long_lived_kept} of 5000 long-lived entries kept");
    }

    #[test]
    fn sweeping_drops_expired_entries_over_a_round_of_turns() {
        let (map, counts) = counting_map(100_000);
        for key in 0..50_000u32 {
            let deadline = if key < 40_000 { at(10) } else { at(1000) };
            map.upsert(key, at(0), |_| ((), deadline));
        }
        let dropped: usize = (0..SWEEP_TURNS).map(|_| map.sweep(at(20))).sum();
        assert_eq!((dropped, map.len()), (40_000, 10_000));
        assert_eq!(counts[1].load(Ordering::Relaxed), 40_000);
        assert_eq!(map.collect(at(20), |k, _| (*k >= 40_000).then_some(())).len(), 10_000);
    }
}
