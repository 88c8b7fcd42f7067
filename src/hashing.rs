//! The hash of the maps the request path probes: foldhash, keyed by 64 random bits a process
//! from the operating system and 64 more a map. Not for anything stored or sent: the values
//! change with every start.
//!
//! std's SipHash-1-3 was 4% of the instructions of a policy request, hashed two to five times
//! a login (the bounded maps hash twice a probe: for the shard, then in the shard's map;
//! docs/BENCHMARKS.md, issue 21). foldhash takes a few nanoseconds for these short keys.
//! Their keys are logins and networks an attacker chooses, so the key must stay secret: it
//! never leaves the process, and nothing a peer sees depends on a hash but the time of a
//! probe. (foldhash's own seeds come from addresses and the time; ours come from getrandom.)

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use foldhash::SharedSeed;
use foldhash::fast::{FoldHasher, SeedableRandomState};

/// A `BuildHasher` keyed by the process's secret seed and a random word of its own.
#[derive(Clone, Debug)]
pub struct Keyed(SeedableRandomState);

/// A `HashMap` with the keyed hash (`KeyedMap::default()` to make one).
pub type KeyedMap<K, V> = HashMap<K, V, Keyed>;

impl Default for Keyed {
    fn default() -> Keyed {
        static SEED: OnceLock<SharedSeed> = OnceLock::new();
        let seed = SEED.get_or_init(|| SharedSeed::from_u64(random_word()));
        Keyed(SeedableRandomState::with_seed(random_word(), seed))
    }
}

impl BuildHasher for Keyed {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> FoldHasher<'static> {
        self.0.build_hasher()
    }
}

fn random_word() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Not seen on Linux, where getrandom(2) waits only until the pool is first ready.
        tracing::warn!("no random key for the in-memory maps' hashes from getrandom; using std's random keys");
        return std::collections::hash_map::RandomState::new().hash_one(0u8);
    }
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_maps_hash_the_same_key_apart_and_one_map_hashes_it_alike() {
        let (a, b) = (Keyed::default(), Keyed::default());
        let key = "alice@example.com";
        assert_eq!(a.hash_one(key), a.hash_one(key));
        assert_ne!(a.hash_one(key), b.hash_one(key), "each map has a random word of its own");
        let mut map: KeyedMap<&str, u32> = KeyedMap::default();
        map.insert(key, 1);
        assert_eq!(map.get(key), Some(&1));
    }
}
