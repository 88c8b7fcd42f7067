//! Self-service unblock: what the public page tells a locked-out visitor, and the
//! proof-of-work challenge (ALTCHA) it must solve before unblocking its own address. No
//! third-party service is involved: the browser spends a second or two of CPU on SHA-256, which
//! is nothing for a person and expensive for a script unblocking addresses in bulk.
//!
//! Each challenge is bound to the address it was issued to (inside its signed salt), expires,
//! and can be used once. Unblocks are counted per address per day. Deciding what may be
//! unblocked is `warden`'s; serving the page is `http::public`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use altcha_lib_rs::{ChallengeOptions, Payload};
use moka::sync::Cache;

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

/// Challenges and the daily count of self-unblocks.
pub struct SelfServiceChecks {
    /// Signs challenges; new at each start (a restart only invalidates challenges in flight).
    hmac_key: String,
    /// Salts of challenges already used, until they would have expired anyway.
    used: Cache<String, ()>,
    /// Self-unblocks per source in the last day.
    unblocks: Cache<Source, u32>,
    /// Page requests per address in the current minute (from its first request).
    requests: Cache<IpAddr, Arc<AtomicU32>>,
}

/// Separates the random part of a salt from the address it was issued to.
const ADDRESS_MARK: &str = "-for-";

impl SelfServiceChecks {
    pub fn new() -> SelfServiceChecks {
        let mut key = [0u8; 32];
        // A failure to get randomness leaves an all-zero key: still per-process unpredictable
        // salts, and challenges remain bound to addresses and single-use.
        let _ = getrandom::fill(&mut key);
        SelfServiceChecks {
            hmac_key: key.iter().map(|b| format!("{b:02x}")).collect(),
            used: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(3600)).build(),
            unblocks: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(24 * 3600)).build(),
            requests: Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build(),
        }
    }

    /// A new challenge for `visitor`, as the ALTCHA JSON the page's solver reads.
    pub fn challenge(&self, visitor: IpAddr, settings: &SelfServiceSettings) -> Option<altcha_lib_rs::Challenge> {
        let expires = chrono::Utc::now() + chrono::TimeDelta::from_std(settings.challenge_expires).ok()?;
        let mut random = [0u8; 12];
        let _ = getrandom::fill(&mut random);
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        // The address goes into the salt itself (signed with it). Not as a salt parameter: the
        // library rebuilds parameters from a hash map, so two of them (with the expiry) would
        // not verify.
        altcha_lib_rs::create_challenge(ChallengeOptions {
            hmac_key: &self.hmac_key,
            max_number: Some(settings.difficulty),
            expires: Some(expires),
            salt: Some(format!("{random}{ADDRESS_MARK}{visitor}")),
            ..Default::default()
        })
        .ok()
    }

    /// Accepts a solved challenge from `visitor` once.
    pub fn verify(&self, visitor: IpAddr, payload: &Payload) -> Result<(), ChallengeError> {
        use altcha_lib_rs::error::Error;
        match altcha_lib_rs::verify_solution(payload, &self.hmac_key, true) {
            Ok(()) => {}
            Err(Error::VerificationFailedExpired(_)) => return Err(ChallengeError::Expired),
            Err(_) => return Err(ChallengeError::Invalid),
        }
        let salt = payload.salt.split_once('?').map_or(payload.salt.as_str(), |(salt, _)| salt);
        if salt.rsplit_once(ADDRESS_MARK).map(|(_, address)| address) != Some(&visitor.to_string()) {
            return Err(ChallengeError::OtherAddress);
        }
        let mut replayed = true;
        self.used.entry(payload.salt.clone()).or_insert_with(|| {
            replayed = false;
        });
        if replayed { Err(ChallengeError::Replayed) } else { Ok(()) }
    }

    /// Counts a page request from `visitor`; `false` once it made `per_minute` this minute.
    pub fn request_allowed(&self, visitor: IpAddr, per_minute: u32) -> bool {
        let count = self.requests.get_with(visitor, || Arc::new(AtomicU32::new(0)));
        count.fetch_add(1, Ordering::Relaxed) < per_minute
    }

    /// Self-unblocks of `source` in the last day.
    pub fn unblocks_today(&self, source: Source) -> u32 {
        self.unblocks.get(&source).unwrap_or(0)
    }

    /// Counts one more self-unblock of `source`.
    pub fn count_unblock(&self, source: Source) {
        self.unblocks.entry(source).and_upsert_with(|current| current.map(|e| e.into_value()).unwrap_or(0) + 1);
    }
}

impl Default for SelfServiceChecks {
    fn default() -> Self {
        SelfServiceChecks::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn solve(challenge: &altcha_lib_rs::Challenge) -> Payload {
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

    #[test]
    fn a_solved_challenge_unblocks_once_and_only_for_its_own_address() {
        let checks = SelfServiceChecks::new();
        let me: IpAddr = "203.0.113.7".parse().unwrap();
        let payload = solve(&checks.challenge(me, &settings()).unwrap());
        assert_eq!(checks.verify("203.0.113.8".parse().unwrap(), &payload), Err(ChallengeError::OtherAddress));
        assert_eq!(checks.verify(me, &payload), Ok(()));
        assert_eq!(checks.verify(me, &payload), Err(ChallengeError::Replayed));
    }

    #[test]
    fn wrong_or_forged_solutions_and_expired_challenges_are_refused() {
        let checks = SelfServiceChecks::new();
        let me: IpAddr = "203.0.113.7".parse().unwrap();
        let mut wrong = solve(&checks.challenge(me, &settings()).unwrap());
        wrong.number += 1;
        assert_eq!(checks.verify(me, &wrong), Err(ChallengeError::Invalid));
        let other_server = SelfServiceChecks::new();
        let forged = solve(&other_server.challenge(me, &settings()).unwrap());
        assert_eq!(checks.verify(me, &forged), Err(ChallengeError::Invalid), "signed with another key");
        let mut rebound = solve(&checks.challenge(me, &settings()).unwrap());
        rebound.salt = rebound.salt.replace("203.0.113.7", "203.0.113.8");
        assert_eq!(
            checks.verify("203.0.113.8".parse().unwrap(), &rebound),
            Err(ChallengeError::Invalid),
            "the address is signed"
        );
        let mut quick = settings();
        quick.challenge_expires = Duration::from_secs(1);
        let expiring = solve(&checks.challenge(me, &quick).unwrap());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(checks.verify(me, &expiring), Err(ChallengeError::Expired));
    }

    #[test]
    fn unblocks_are_counted_per_source() {
        let checks = SelfServiceChecks::new();
        let grouping = crate::network::SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 };
        let a = grouping.source_of("203.0.113.7".parse().unwrap());
        checks.count_unblock(a);
        checks.count_unblock(a);
        assert_eq!(checks.unblocks_today(a), 2);
        assert_eq!(checks.unblocks_today(grouping.source_of("203.0.113.8".parse().unwrap())), 0);
    }

    #[test]
    fn page_requests_are_limited_per_address_and_minute() {
        let checks = SelfServiceChecks::new();
        let me: IpAddr = "203.0.113.7".parse().unwrap();
        assert!((0..5).all(|_| checks.request_allowed(me, 5)));
        assert!(!checks.request_allowed(me, 5));
        assert!(checks.request_allowed("203.0.113.8".parse().unwrap(), 5), "other addresses are not affected");
    }

    #[test]
    fn logins_are_masked_for_strangers() {
        assert_eq!(mask_login("alice@example.com"), "a***e@example.com");
        assert_eq!(mask_login("al@example.com"), "a***@example.com");
        assert_eq!(mask_login("bob"), "b***b");
        assert_eq!(mask_login(""), "");
    }
}
