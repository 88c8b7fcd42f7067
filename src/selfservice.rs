//! Self-service unblock: what the public page tells a locked-out visitor, and the
//! proof-of-work challenge (ALTCHA) it must solve before unblocking its own address. No
//! third-party service is involved: the browser spends a second or two of CPU on SHA-256, which
//! is nothing for a person and expensive for a script unblocking addresses in bulk.
//!
//! Each challenge is bound to the source (the address grouped as bans group it: IPv6 per /64
//! by default) it was issued to, inside its signed salt, and expires. Signed with a key the
//! store keeps, so a challenge outlives a restart and any node of a cluster accepts it; that
//! it is used once, and the count of unblocks per source per day, the store records too
//! (`warden` asks it). Nothing here does I/O. Deciding what may be unblocked is `warden`'s;
//! serving the page is `http::public`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use altcha_lib_rs::{ChallengeOptions, Payload};
use moka::sync::Cache;

use crate::clock::Timestamp;
use crate::network::Source;

/// The self-service page's settings (`[self_service]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfServiceSettings {
    /// Self-unblocks allowed per address per day; then the page sends people to support.
    pub max_unblocks_per_day: u32,
    /// Requests one address may make to the page per minute; more get 429.
    pub max_requests_per_minute: u32,
    /// The proof-of-work's size: the largest number the browser may have to try.
    pub difficulty: u64,
    /// How long a challenge may be solved in; each is good for one unblock.
    pub challenge_expires: Duration,
    /// Who runs the mail service, as the page names it.
    pub provider_name: String,
    /// Where people go when self-service is not enough (an address, a phone number, a URL).
    pub support_contact: String,
    /// Every text on the page, by key; policy.toml's `[self_service.text]` overrides defaults.
    pub text: BTreeMap<String, String>,
}

/// Every text of the page, by key, in English. `{name}` placeholders are filled in by the page.
pub fn default_texts() -> BTreeMap<String, String> {
    [
        ("title", "Is my address blocked?"),
        ("your_address", "Your address is {address}."),
        ("not_banned", "It is not blocked. If a mail app still cannot log in, check its password and server settings."),
        ("banned", "It is blocked until {until} because of too many failed logins."),
        (
            "admin_block",
            "It is blocked by the administrators of {provider} and cannot be unblocked here. Please contact {support}.",
        ),
        (
            "subnet_banned",
            "Your whole network ({network}) is blocked until {until}, because several addresses in it made too many failed logins. This cannot be unblocked here: please contact {support} and tell them your address.",
        ),
        (
            "login_refused",
            "Logins to {login} from your address are paused until {until} because of wrong passwords; other accounts are not affected.",
        ),
        ("cause_heading", "What caused it"),
        ("cause_guess", "{count} failed logins to {login} over {protocol}{device}"),
        ("cause_guess_one", "1 failed login to {login} over {protocol}{device}"),
        ("cause_stale", "a saved password that is no longer valid"),
        ("steps_heading", "How to get back in"),
        ("step_find", "Find the device (phone, tablet or computer) whose mail app still uses an old password."),
        ("step_update", "Update the password in that app's account settings, or remove the account from the app."),
        ("step_unblock", "Then unblock your address with the button below."),
        ("unblock_button", "Unblock my address"),
        ("working", "Checking that you are a person; this takes a few seconds..."),
        ("unblocked", "Your address is unblocked. Your mail apps can log in again."),
        ("limit", "This address was unblocked {count} times today already. Please contact {support}."),
        ("failed", "That did not work: {reason} Reload the page and try again."),
        (
            "unavailable",
            "Unblocking is not possible at the moment. Please try again in a few minutes, or contact {support}.",
        ),
        ("support_fallback", "your mail provider's support"),
        ("footer", "This page is run by {provider}."),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `alice@example.com` as `a***e@example.com`: enough for its owner to recognise, too little for
/// a stranger at the same address to learn it.
pub fn mask_login(login: &str) -> String {
    let (local, domain) = match login.rfind('@') {
        Some(at) => (&login[..at], &login[at..]),
        None => (login, ""),
    };
    let chars: Vec<char> = local.chars().collect();
    let masked = match chars.len() {
        0 => String::new(),
        1 | 2 => format!("{}***", chars[0]),
        n => format!("{}***{}", chars[0], chars[n - 1]),
    };
    format!("{masked}{domain}")
}

/// Why a solved challenge is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("the check was not solved correctly.")]
    Invalid,
    #[error("the check took too long and expired.")]
    Expired,
    #[error("this check was already used.")]
    Replayed,
    #[error("the check was made for another address.")]
    OtherAddress,
}

/// A challenge solved correctly, in time and for the visitor's source: what the warden records
/// as used (until it would have expired anyway) before it unblocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolvedChallenge {
    /// The random part of its salt, unique to the challenge.
    pub id: String,
    pub expires_at: Timestamp,
}

/// Separates the random part of a salt from the source it was issued to.
const ADDRESS_MARK: &str = "-for-";

/// A new random key to sign challenges with (64 hex digits): offered to the store, which keeps
/// the first one it was given (`Store::self_service_key`), so challenges survive a restart and
/// every node of a cluster accepts the others'. `None` when the system has no randomness to
/// give: the first key offered is kept for good, so a guessable one must never be.
pub fn new_challenge_key() -> Option<String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).ok()?;
    Some(key.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new challenge for `visitor`, signed with `key`, as the ALTCHA JSON the page's solver reads.
pub fn challenge(
    key: &str,
    visitor: Source,
    settings: &SelfServiceSettings,
    now: Timestamp,
) -> Option<altcha_lib_rs::Challenge> {
    let expires = chrono::DateTime::from_timestamp_millis(now.plus(settings.challenge_expires).0)?;
    // The random part is the challenge's id in the store: without randomness, no challenge.
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).ok()?;
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    // The source goes into the salt itself (signed with it). Not as a salt parameter: the
    // library rebuilds parameters from a hash map, so two of them (with the expiry) would
    // not verify.
    altcha_lib_rs::create_challenge(ChallengeOptions {
        hmac_key: key,
        max_number: Some(settings.difficulty),
        expires: Some(expires),
        salt: Some(format!("{random}{ADDRESS_MARK}{visitor}")),
        ..Default::default()
    })
    .ok()
}

/// Checks a solution from `visitor` against `key`: solved, signed, not expired at `now`, and
/// issued to the same source. Whether it was used before is the store's to say.
pub fn verify(
    key: &str,
    visitor: Source,
    payload: &Payload,
    now: Timestamp,
) -> Result<SolvedChallenge, ChallengeError> {
    // The library's own expiry check reads the system clock; ours reads the warden's.
    altcha_lib_rs::verify_solution(payload, key, false).map_err(|_| ChallengeError::Invalid)?;
    // Only the form `challenge` issues: the library reads repeated or unterminated parameters
    // its own way (one a reader here might not), so anything else is not ours.
    let (salt, parameters) = payload.salt.split_once('?').ok_or(ChallengeError::Invalid)?;
    let expires = parameters
        .strip_prefix("expires=")
        .and_then(|rest| rest.strip_suffix('&'))
        .filter(|seconds| !seconds.is_empty() && seconds.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|seconds| seconds.parse::<i64>().ok())
        .ok_or(ChallengeError::Invalid)?;
    let expires_at = Timestamp(expires.saturating_mul(1000));
    if expires_at <= now {
        return Err(ChallengeError::Expired);
    }
    let (id, issued_to) = salt.rsplit_once(ADDRESS_MARK).ok_or(ChallengeError::Invalid)?;
    if issued_to != visitor.to_string() {
        return Err(ChallengeError::OtherAddress);
    }
    Ok(SolvedChallenge { id: id.to_string(), expires_at })
}

/// The page's flood guard: requests per source in the current minute (from its first
/// request). Memory only, per node: it only has to slow a script down, unlike the daily count
/// of unblocks, which the store keeps.
pub struct PageRequests {
    requests: Cache<Source, Arc<AtomicU32>>,
}

impl PageRequests {
    pub fn new() -> PageRequests {
        PageRequests { requests: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build() }
    }

    /// Counts a page request from `visitor`; `false` once it made `per_minute` this minute.
    pub fn allowed(&self, visitor: Source, per_minute: u32) -> bool {
        let count = self.requests.get_with(visitor, || Arc::new(AtomicU32::new(0)));
        count.fetch_add(1, Ordering::Relaxed) < per_minute
    }
}

impl Default for PageRequests {
    fn default() -> Self {
        PageRequests::new()
    }
}

/// `challenge` solved as the page's script would: for tests here and in `warden`.
#[cfg(test)]
pub(crate) fn solve(challenge: &altcha_lib_rs::Challenge) -> Payload {
    let number = altcha_lib_rs::solve_challenge(
        &challenge.challenge,
        &challenge.salt,
        Some(challenge.algorithm),
        Some(challenge.maxnumber),
        0,
    )
    .expect("solvable");
    Payload {
        algorithm: challenge.algorithm,
        challenge: challenge.challenge.clone(),
        number,
        salt: challenge.salt.clone(),
        signature: challenge.signature.clone(),
        took: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_names_every_text_of_the_page() {
        let policy = include_str!("../policy.toml");
        let start = policy.find("# The keys: ").expect("policy.toml lists the page's text keys");
        let listed = policy[start + "# The keys: ".len()..].split('.').next().unwrap_or_default();
        let mut listed: Vec<String> =
            listed.split(',').map(|key| key.trim().trim_start_matches('#').trim().to_string()).collect();
        listed.sort();
        let known: Vec<String> = default_texts().into_keys().collect();
        assert_eq!(listed, known, "policy.toml's list of [self_service.text] keys");
    }
    use crate::network::SourceGrouping;

    const NOW: Timestamp = Timestamp(1_795_334_400_000);
    const GROUPING: SourceGrouping = SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 };

    fn source(ip: &str) -> Source {
        GROUPING.source_of(ip.parse().unwrap())
    }

    fn settings() -> SelfServiceSettings {
        SelfServiceSettings {
            max_unblocks_per_day: 3,
            max_requests_per_minute: 60,
            difficulty: 1_000,
            challenge_expires: Duration::from_secs(60),
            provider_name: "Example".into(),
            support_contact: "support@example.com".into(),
            text: default_texts(),
        }
    }

    #[test]
    fn a_solved_challenge_is_accepted_only_for_its_own_source() {
        let key = new_challenge_key().unwrap();
        let me = source("2001:db8:1:2::7");
        let payload = solve(&challenge(&key, me, &settings(), NOW).unwrap());
        assert_eq!(verify(&key, source("2001:db8:1:3::7"), &payload, NOW), Err(ChallengeError::OtherAddress));
        let solved = verify(&key, source("2001:db8:1:2:ffff::1"), &payload, NOW).expect("the same /64");
        assert_eq!(solved.expires_at, Timestamp(NOW.0 + 60_000));
        let other = solve(&challenge(&key, me, &settings(), NOW).unwrap());
        assert_ne!(verify(&key, me, &other, NOW).unwrap().id, solved.id, "each challenge has its own id");
    }

    #[test]
    fn wrong_or_forged_solutions_and_expired_challenges_are_refused() {
        let key = new_challenge_key().unwrap();
        let me = source("203.0.113.7");
        let mut wrong = solve(&challenge(&key, me, &settings(), NOW).unwrap());
        wrong.number += 1;
        assert_eq!(verify(&key, me, &wrong, NOW), Err(ChallengeError::Invalid));
        let forged = solve(&challenge(&new_challenge_key().unwrap(), me, &settings(), NOW).unwrap());
        assert_eq!(verify(&key, me, &forged, NOW), Err(ChallengeError::Invalid), "signed with another key");
        let mut rebound = solve(&challenge(&key, me, &settings(), NOW).unwrap());
        rebound.salt = rebound.salt.replace("203.0.113.7", "203.0.113.8");
        assert_eq!(
            verify(&key, source("203.0.113.8"), &rebound, NOW),
            Err(ChallengeError::Invalid),
            "the source is signed"
        );
        let expiring = solve(&challenge(&key, me, &settings(), NOW).unwrap());
        assert!(verify(&key, me, &expiring, NOW.plus(Duration::from_secs(59))).is_ok());
        let (salt, _) = expiring.salt.split_once('?').unwrap();
        let mut extended = expiring.clone();
        extended.salt = format!("{salt}?expires=99999999999&{}", expiring.salt.split_once('?').unwrap().1);
        assert_eq!(
            verify(&key, me, &extended, NOW.plus(Duration::from_secs(60))),
            Err(ChallengeError::Invalid),
            "a second expiry in front of the signed one"
        );
        assert_eq!(verify(&key, me, &expiring, NOW.plus(Duration::from_secs(60))), Err(ChallengeError::Expired));
    }

    #[test]
    fn page_requests_are_limited_per_source_and_minute() {
        let requests = PageRequests::new();
        let me = source("2001:db8:1:2::1");
        assert!((0..5).all(|_| requests.allowed(me, 5)));
        assert!(!requests.allowed(source("2001:db8:1:2::2"), 5), "another address in the same /64");
        assert!(requests.allowed(source("2001:db8:1:3::1"), 5), "other sources are not affected");
    }

    #[test]
    fn logins_are_masked_for_strangers() {
        assert_eq!(mask_login("alice@example.com"), "a***e@example.com");
        assert_eq!(mask_login("al@example.com"), "a***@example.com");
        assert_eq!(mask_login("bob"), "b***b");
        assert_eq!(mask_login(""), "");
    }
}
