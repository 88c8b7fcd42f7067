//! Console sessions: who signed in to the console, with which token, and the per-session
//! secret every change must carry (CSRF). Memory only, bounded, and ended by idleness: a
//! restart signs everybody out, which for a handful of support staff is a fair price for
//! holding no session secret on disk. A session does not copy its token's scope: it keeps
//! the SHA-256 of the token it was opened with, and every request asks again what that token
//! may do, so revoking, expiring or rotating a token ends its sessions at once.
//! Knows nothing of HTTP: `http::console` turns cookies and forms into these calls.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Timestamp;
use crate::tokens::TokenDigest;

/// The console's settings (`[console]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Whether `/console/` is served on the admin listener.
    pub enabled: bool,
    /// A session unused this long is ended.
    pub idle_timeout: Duration,
    /// Mark the cookie `Secure` even though the admin listener speaks plain HTTP: TLS is
    /// ended by a reverse proxy in front. (It is always `Secure` when the listener has TLS.)
    pub secure_cookie: bool,
}

/// Sessions held at most; when full, the one idle longest is ended to make room, so a flood
/// of sign-ins with a stolen token cannot grow memory without bound.
pub const MAX_SESSIONS: usize = 10_000;

/// A one-shot message shown on the next page after a change ("Ban on 192.0.2.7 lifted").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub success: bool,
    pub text: String,
}

/// What a request learns of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The SHA-256 of the token the session was opened with.
    pub credential: TokenDigest,
    /// The value every change's form must carry.
    pub csrf: String,
    /// The message left by the previous change, taken (shown once).
    pub flash: Option<Flash>,
}

struct Session {
    credential: TokenDigest,
    csrf: String,
    last_seen: Timestamp,
    flash: Option<Flash>,
}

/// The open sessions, keyed by the SHA-256 of the cookie's value: memory holds no cookie a
/// dump could replay, and the lookup's timing says nothing about the cookie itself.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

/// A new random secret: 32 bytes as 64 hex digits.
fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random numbers for a session: {e}"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn key_of(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

/// Whether `presented` is the session's CSRF value `expected`, compared in constant time.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for the token whose digest is `credential`; returns the cookie's value.
    pub fn open(&self, credential: TokenDigest, now: Timestamp, idle: Duration) -> Result<String, String> {
        let cookie = random_secret()?;
        let csrf = random_secret()?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, session| session.last_seen.plus(idle) > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, session)| session.last_seen).map(|(key, _)| *key)
        {
            open.remove(&oldest);
        }
        open.insert(key_of(&cookie), Session { credential, csrf, last_seen: now, flash: None });
        Ok(cookie)
    }

    /// The session of `cookie` if it is open and was used within `idle`; using it restarts
    /// its idle time. An idle session is ended here.
    pub fn touch(&self, cookie: &str, now: Timestamp, idle: Duration) -> Option<SessionView> {
        let key = key_of(cookie);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let session = open.get_mut(&key)?;
        if session.last_seen.plus(idle) <= now {
            open.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(SessionView { credential: session.credential, csrf: session.csrf.clone(), flash: session.flash.take() })
    }

    /// Leaves `flash` for the next page of the session of `cookie`.
    pub fn flash(&self, cookie: &str, flash: Flash) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(session) = open.get_mut(&key_of(cookie)) {
            session.flash = Some(flash);
        }
    }

    /// Ends the session of `cookie` (sign-out).
    pub fn close(&self, cookie: &str) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&key_of(cookie));
    }

    /// Sessions open (idle ones not yet ended included).
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Timestamp = Timestamp(1_795_334_400_000);
    const IDLE: Duration = Duration::from_secs(30 * 60);

    #[test]
    fn a_session_lasts_while_it_is_used_and_ends_when_idle() {
        let sessions = Sessions::default();
        let cookie = sessions.open([7; 32], START, IDLE).unwrap();
        let later = START.plus(Duration::from_secs(29 * 60));
        assert_eq!(sessions.touch(&cookie, later, IDLE).map(|s| s.credential), Some([7; 32]));
        let still = later.plus(Duration::from_secs(29 * 60));
        assert!(sessions.touch(&cookie, still, IDLE).is_some(), "each use restarts the idle time");
        assert!(sessions.touch(&cookie, still.plus(IDLE), IDLE).is_none(), "idle for the whole timeout");
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_closed_or_unknown_cookie_opens_nothing() {
        let sessions = Sessions::default();
        let cookie = sessions.open([1; 32], START, IDLE).unwrap();
        assert!(sessions.touch("not-a-session", START, IDLE).is_none());
        sessions.close(&cookie);
        assert!(sessions.touch(&cookie, START, IDLE).is_none());
    }

    #[test]
    fn each_session_has_its_own_csrf_value_and_a_flash_is_shown_once() {
        let sessions = Sessions::default();
        let first = sessions.open([1; 32], START, IDLE).unwrap();
        let second = sessions.open([1; 32], START, IDLE).unwrap();
        let a = sessions.touch(&first, START, IDLE).unwrap();
        let b = sessions.touch(&second, START, IDLE).unwrap();
        assert_ne!(a.csrf, b.csrf);
        assert!(csrf_matches(&a.csrf, &a.csrf) && !csrf_matches(&a.csrf, &b.csrf) && !csrf_matches(&a.csrf, ""));
        sessions.flash(&first, Flash { success: true, text: "Ban lifted".into() });
        assert_eq!(sessions.touch(&first, START, IDLE).unwrap().flash.map(|f| f.text), Some("Ban lifted".into()));
        assert_eq!(sessions.touch(&first, START, IDLE).unwrap().flash, None);
    }

    #[test]
    fn a_full_table_ends_the_session_idle_longest() {
        let sessions = Sessions::default();
        let oldest = sessions.open([1; 32], START, IDLE).unwrap();
        for n in 1..MAX_SESSIONS {
            sessions.open([2; 32], START.plus(Duration::from_millis(n as u64)), IDLE).unwrap();
        }
        let newest = sessions.open([3; 32], START.plus(Duration::from_secs(60)), IDLE).unwrap();
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.touch(&oldest, START.plus(Duration::from_secs(60)), IDLE).is_none());
        assert!(sessions.touch(&newest, START.plus(Duration::from_secs(60)), IDLE).is_some());
    }
}
