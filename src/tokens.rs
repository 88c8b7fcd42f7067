//! Named, scoped admin tokens: how they are made, stored (as SHA-256 digests only), found on
//! the request path (one hash-map probe in memory), and the per-address guard that stops a
//! client guessing them. No HTTP and no store calls here: `warden/tokens.rs` stores and
//! announces, `http::admin` asks `Tokens::authenticate`.
//!
//! Why SHA-256 and not a password hash (argon2, scrypt): a token is 256 random bits, so no
//! attacker can enumerate candidates against a stolen digest; a slow KDF exists to make
//! guessing *low-entropy* secrets expensive and would only slow every API request down.
//!
//! Why a hash-map lookup keyed by the digest leaks nothing: the map is probed with the
//! SHA-256 of what the client sent, so whatever timing the probe shows depends on that
//! digest, which the client can compute itself, and on how it compares with stored digests.
//! Learning that a stored digest shares a prefix with one of its own tells it nothing about
//! a token that hashes to it (SHA-256 is preimage-resistant), so it cannot steer its guesses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};

use crate::clock::Timestamp;
use crate::principal::{BUILT_IN_ADMIN, Principal, Scope};

/// The SHA-256 of a token, the only form the store and memory hold.
pub type TokenDigest = [u8; 32];

/// A token as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub scope: Scope,
    pub digest: TokenDigest,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// When it was last used, to the hour (`LAST_USED_GRAIN`): coarse, so using a token
    /// writes to the store at most once an hour.
    pub last_used: Option<Timestamp>,
}

impl TokenRecord {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|end| end > now)
    }

    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }
}

/// How precisely `last_used` is kept.
pub const LAST_USED_GRAIN: Duration = Duration::from_secs(3600);

/// The longest token name.
pub const MAX_NAME_LEN: usize = 64;

/// A new token's secret: `mwt_` and 64 hex digits (256 random bits). The prefix lets secret
/// scanners recognise one pasted where it should not be.
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot get random bytes for a new token: {e}"))?;
    Ok(format!("mwt_{}", hex(&bytes)))
}

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the 64 hex digits a store holds.
pub fn parse_digest(text: &str) -> Option<TokenDigest> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

/// A token's name is shown in lists and the audit trail and typed on command lines: 1 to 64
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit, and not the built-in
/// admin token's.
pub fn check_name(name: &str) -> Result<(), String> {
    let quoted: String = name.chars().take(MAX_NAME_LEN + 1).collect();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name: 1 to {MAX_NAME_LEN} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "name: {quoted:?} may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit"
        ));
    }
    if name == BUILT_IN_ADMIN {
        return Err(format!("name: {BUILT_IN_ADMIN} is the policy file's auth.admin_token"));
    }
    Ok(())
}

/// A token held in memory, with the hour it was last used.
struct Held {
    record: TokenRecord,
    last_used: AtomicI64,
}

/// Every stored token by digest, replaced whole on a change (here or announced by another
/// node), read without locking.
#[derive(Default)]
pub struct Tokens {
    by_digest: ArcSwap<HashMap<TokenDigest, Arc<Held>>>,
}

/// What `Tokens::authenticate` found.
pub struct Authenticated {
    pub principal: Principal,
    /// Set when the token's `last_used` moved to a new hour: the caller stores it.
    pub touched: Option<Timestamp>,
}

impl Tokens {
    /// Makes `records` the tokens in force.
    pub fn replace(&self, records: Vec<TokenRecord>) {
        let map = records
            .into_iter()
            .map(|record| {
                let last_used = AtomicI64::new(record.last_used.map_or(i64::MIN, |t| t.0));
                (record.digest, Arc::new(Held { record, last_used }))
            })
            .collect();
        self.by_digest.store(Arc::new(map));
    }

    /// The tokens in force, by name.
    pub fn records(&self) -> Vec<TokenRecord> {
        let mut records: Vec<TokenRecord> = self
            .by_digest
            .load()
            .values()
            .map(|held| {
                let mut record = held.record.clone();
                let used = held.last_used.load(Ordering::Relaxed);
                record.last_used = (used != i64::MIN).then_some(Timestamp(used));
                record
            })
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        records
    }

    /// The principal of the stored token whose digest is `digest`, if it is in force at `now`
    /// (what a console session was opened with).
    pub fn principal_of(&self, digest: &TokenDigest, now: Timestamp) -> Option<Principal> {
        let map = self.by_digest.load();
        let held = map.get(digest).filter(|held| held.record.is_active(now))?;
        Some(Principal { name: held.record.name.clone(), scope: held.record.scope.clone() })
    }

    /// The principal of `presented`, if it is a stored token in force at `now`.
    pub fn authenticate(&self, presented: &str, now: Timestamp) -> Option<Authenticated> {
        let map = self.by_digest.load();
        let held = map.get(&digest(presented))?;
        if !held.record.is_active(now) {
            return None;
        }
        let grain = i64::try_from(LAST_USED_GRAIN.as_millis()).unwrap_or(i64::MAX);
        let hour = Timestamp(now.0 - now.0.rem_euclid(grain));
        let previous = held.last_used.fetch_max(hour.0, Ordering::Relaxed);
        Some(Authenticated {
            principal: Principal { name: held.record.name.clone(), scope: held.record.scope.clone() },
            touched: (previous < hour.0).then_some(hour),
        })
    }
}

/// Wrong bearer tokens per client address, memory only: after
/// `MAX_FAILURES_PER_MINUTE` within a minute of the first, every request from there is
/// answered 429 until that minute has passed, the right token included, so the API (and the
/// console's sign-in) cannot be used to guess tokens. IPv6 clients count per /64, as one
/// host usually holds a whole /64.
pub struct SignInGuard {
    failures: moka::sync::Cache<IpAddr, (Timestamp, u32)>,
}

pub const MAX_FAILURES_PER_MINUTE: u32 = 10;
const GUARD_WINDOW: Duration = Duration::from_secs(60);

impl Default for SignInGuard {
    fn default() -> SignInGuard {
        SignInGuard { failures: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(GUARD_WINDOW).build() }
    }
}

fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6(ipnet::Ipv6Net::new(v6, 64).map_or(v6, |net| net.trunc().addr())),
    }
}

impl SignInGuard {
    /// Whether `address` used up its failures for this minute.
    pub fn is_limited(&self, address: IpAddr, now: Timestamp) -> bool {
        self.failures
            .get(&client_key(address))
            .is_some_and(|(since, count)| count >= MAX_FAILURES_PER_MINUTE && now < since.plus(GUARD_WINDOW))
    }

    /// Counts a failed authentication from `address`.
    pub fn failed(&self, address: IpAddr, now: Timestamp) {
        let key = client_key(address);
        let entry = match self.failures.get(&key) {
            Some((since, count)) if now < since.plus(GUARD_WINDOW) => (since, count.saturating_add(1)),
            _ => (now, 1),
        };
        self.failures.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, token: &str, expires_at: Option<Timestamp>) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            scope: Scope::Support,
            digest: digest(token),
            created_at: Timestamp(0),
            expires_at,
            last_used: None,
        }
    }

    #[test]
    fn a_token_is_found_by_its_digest_until_it_expires() {
        let tokens = Tokens::default();
        let secret = generate().unwrap();
        assert_eq!(secret.len(), 68);
        tokens.replace(vec![record("desk", &secret, Some(Timestamp(10_000_000)))]);
        let found = tokens.authenticate(&secret, Timestamp(5_000_000)).unwrap();
        assert_eq!(found.principal, Principal { name: "desk".into(), scope: Scope::Support });
        assert_eq!(found.touched, Some(Timestamp(3_600_000)));
        assert!(tokens.authenticate(&secret, Timestamp(5_000_001)).unwrap().touched.is_none());
        assert!(tokens.authenticate(&secret[..67], Timestamp(5_000_000)).is_none());
        assert!(tokens.authenticate(&secret, Timestamp(10_000_000)).is_none());
        assert_eq!(parse_digest(&record("x", &secret, None).digest_hex()), Some(digest(&secret)));
    }

    #[test]
    fn names_are_short_plain_and_not_the_built_in_one() {
        for good in ["desk", "grafana-1", "ops.team_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "ünï", "x\n", BUILT_IN_ADMIN, &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_address_is_limited_after_ten_failures_until_its_minute_has_passed() {
        let guard = SignInGuard::default();
        let address: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            assert!(!guard.is_limited(address, Timestamp(1_000)));
            guard.failed(address, Timestamp(1_000));
        }
        assert!(guard.is_limited(neighbour, Timestamp(30_000)));
        assert!(!guard.is_limited(address, Timestamp(61_000)));
        assert!(!guard.is_limited("192.0.2.1".parse().unwrap(), Timestamp(1_000)));
    }
}
