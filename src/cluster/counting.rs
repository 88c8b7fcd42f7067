//! Failure counting shared by every node: each source's distinct wrong guesses in one Redis
//! hash, `RedisStore::failures_key` (`{prefix}fail:{<source>}`: the braces make the source a
//! hash tag, so a Redis Cluster keeps the key whole on one node), updated by Lua scripts so that nodes counting the same
//! source at once never lose a failure. The rules are those of `failures` (a repeated password
//! counts once, a guess that failed `stale_after` times is quarantined, guesses leave the
//! window after their last failure); the hash is dropped by the store when a ban is saved or
//! lifted, which also notes the time (`RedisStore::forgiven_key`) so that a failure from before
//! it that arrives later is not counted again, and expires by itself when no guess in it is
//! needed any more.
//!
//! Each field is a guess's key (the same keyed hash on every node, 16 hex digits); its value
//! is JSON: `t` failures in the window, `f`/`l` first and last failure (Unix ms), `w` weight,
//! `q` quarantine end (0: none), `u` login, `p` protocol, `d` mail app (cut like the local
//! history's).

use std::time::Duration;

use serde::Deserialize;

use crate::bans::BanGuess;
use crate::clock::Timestamp;
use crate::failures::{Counting, GuessKey};

/// Records one failure of a guess and returns `{new_guess, quarantined, failures, {all fields}}`.
/// A failure that happened by the time its source's failures were last forgiven (a ban or a
/// lift, whose save may overtake the batch that carries it) is not recorded: `{0, 0, 0, {}}`.
///
/// KEYS[1]: the source's hash, KEYS[2]: when its failures were forgiven (`forgiven_key`).
/// ARGV: guess, now (the failure's time), window, weight, stale_after (0: off),
/// quarantine_for, login, protocol, device, most guesses kept (all in milliseconds).
pub const RECORD_FAILURE: &str = r#"
local now = tonumber(ARGV[2])
local forgiven = tonumber(redis.call('GET', KEYS[2]) or '')
if forgiven and now <= forgiven then
  return {0, 0, 0, {}}
end
local horizon = now - tonumber(ARGV[3])
local stale_after = tonumber(ARGV[5])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local guess
if raw then
  guess = cjson.decode(raw)
else
  guess = {t = 0, f = now, l = now, w = tonumber(ARGV[4]), q = 0}
end
if guess.l <= horizon then
  guess.t = 0
  guess.f = now
end
local new_guess = 0
if guess.t == 0 then new_guess = 1 end
guess.t = guess.t + 1
guess.l = now
guess.u = ARGV[7]
guess.p = ARGV[8]
guess.d = ARGV[9]
local quarantined = 0
if stale_after > 0 and guess.t >= stale_after and guess.q <= now then
  guess.q = now + tonumber(ARGV[6])
  quarantined = 1
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(guess))
local fields = redis.call('HGETALL', KEYS[1])
local needed_until = now + tonumber(ARGV[3])
local kept = 0
local oldest, oldest_seen = nil, nil
for i = 1, #fields, 2 do
  local other = cjson.decode(fields[i + 1])
  if other.l <= horizon and other.q <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    kept = kept + 1
    if other.q > needed_until then needed_until = other.q end
    if fields[i] ~= ARGV[1] and (oldest_seen == nil or other.l < oldest_seen) then
      oldest, oldest_seen = fields[i], other.l
    end
  end
end
if kept > tonumber(ARGV[10]) and oldest then
  redis.call('HDEL', KEYS[1], oldest)
end
redis.call('PEXPIREAT', KEYS[1], needed_until)
return {new_guess, quarantined, guess.t, redis.call('HGETALL', KEYS[1])}
"#;

/// Forgets the guesses of one login (it just logged in from the source): KEYS[1] the source's
/// hash, ARGV[1] the login as kept. Returns how many were dropped.
pub const FORGET_LOGIN: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
local dropped = 0
for i = 1, #fields, 2 do
  if cjson.decode(fields[i + 1]).u == ARGV[1] then
    redis.call('HDEL', KEYS[1], fields[i])
    dropped = dropped + 1
  end
end
return dropped
"#;

/// A guess's field name.
pub fn field(key: GuessKey) -> String {
    format!("{:016x}", key.0)
}

/// The guess a field names.
pub fn parse_field(field: &str) -> Option<GuessKey> {
    u64::from_str_radix(field, 16).ok().map(GuessKey)
}

/// Most guesses a source's hash keeps: as the local history, enough to ban the most
/// tolerated source and some more that are only held for their quarantine.
pub fn most_guesses(counting: &Counting) -> u32 {
    counting.max_guesses.max(counting.max_failures).max(1) + 8
}

/// One guess as the shared hash holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SharedGuess {
    #[serde(rename = "t")]
    pub failures: u32,
    #[serde(rename = "f")]
    pub first_seen: i64,
    #[serde(rename = "l")]
    pub last_seen: i64,
    #[serde(rename = "w")]
    pub weight: u32,
    #[serde(rename = "q")]
    pub quarantine_ends: i64,
    #[serde(rename = "u", default)]
    pub login: String,
    #[serde(rename = "p", default)]
    pub protocol: String,
    #[serde(rename = "d", default)]
    pub device_id: String,
}

/// What recording a failure found, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCount {
    /// Whether the guess was new in the window.
    pub new_guess: bool,
    /// Whether this failure put the guess in quarantine.
    pub quarantined: bool,
    /// Failures of this guess in the window, on every node.
    pub failures: u32,
    pub guesses: Vec<SharedGuess>,
}

impl SharedCount {
    /// From the script's answer; fields that do not parse (written by a newer version, or
    /// damaged) are left out rather than failing the count.
    pub fn from_reply(reply: (i64, i64, i64, Vec<String>)) -> SharedCount {
        let (new_guess, quarantined, failures, flat) = reply;
        let guesses = flat.chunks_exact(2).filter_map(|pair| serde_json::from_str(&pair[1]).ok()).collect();
        SharedCount {
            new_guess: new_guess == 1,
            quarantined: quarantined == 1,
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            guesses,
        }
    }

    fn in_window(guess: &SharedGuess, now: Timestamp, window: Duration) -> bool {
        guess.last_seen > now.minus(window).0
    }

    /// Distinct guesses in the window, each counted by its weight: what the ban threshold is
    /// compared with.
    pub fn distinct_in_window(&self, now: Timestamp, window: Duration) -> u32 {
        self.guesses.iter().filter(|g| Self::in_window(g, now, window)).map(|g| g.weight.max(1)).sum()
    }

    /// The guesses of `login` (compared by `login::key`) in the window, each counted by its
    /// weight: what an IP+login refusal is decided on. (A login's forgiven guesses are gone
    /// from the shared count.)
    pub fn login_distinct_in_window(&self, login: &str, now: Timestamp, window: Duration) -> u32 {
        let wanted = crate::login::key(login);
        self.guesses
            .iter()
            .filter(|g| Self::in_window(g, now, window) && crate::login::key(&g.login) == wanted)
            .map(|g| g.weight.max(1))
            .sum()
    }

    /// The guesses in the window (`login`: only that login's), as a ban records them.
    pub fn ban_guesses(&self, now: Timestamp, window: Duration, login: Option<&str>) -> Vec<BanGuess> {
        let wanted = login.map(crate::login::key);
        self.guesses
            .iter()
            .filter(|g| Self::in_window(g, now, window))
            .filter(|g| wanted.as_ref().is_none_or(|w| crate::login::key(&g.login) == *w))
            .map(|g| BanGuess {
                login: g.login.clone(),
                protocol: g.protocol.clone(),
                device_id: g.device_id.clone(),
                failures: g.failures,
                // Written by another node: kept to the range every formatter handles.
                first_seen: Timestamp(g.first_seen).clamped().0,
                last_seen: Timestamp(g.last_seen).clamped().0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(last_seen: i64, weight: u32) -> String {
        format!(r#"{{"t":1,"f":{last_seen},"l":{last_seen},"w":{weight},"q":0,"u":"a","p":"imap","d":""}}"#)
    }

    #[test]
    fn the_shared_count_weighs_guesses_in_the_window_and_skips_damaged_fields() {
        let now = Timestamp(10_000_000);
        let window = Duration::from_secs(1200);
        let flat = vec![
            "01".to_string(),
            guess(now.0 - 1000, 1),
            "02".into(),
            guess(now.0 - 2000, 2),
            "03".into(),
            guess(now.0 - 1_200_000, 1),
            "04".into(),
            "{not json".into(),
        ];
        let count = SharedCount::from_reply((1, 0, 1, flat));
        assert_eq!(count.guesses.len(), 3);
        assert_eq!(count.distinct_in_window(now, window), 3);
        assert_eq!(count.ban_guesses(now, window, None).len(), 2);
        assert_eq!(count.login_distinct_in_window("A", now, window), 3, "one login's guesses, any spelling");
        assert_eq!(count.login_distinct_in_window("b", now, window), 0);
    }

    #[test]
    fn guess_fields_round_trip() {
        let key = GuessKey(0x00ab_cdef_0123_4567);
        assert_eq!(field(key), "00abcdef01234567");
        assert_eq!(parse_field(&field(key)), Some(key));
    }
}
