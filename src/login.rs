//! How mailwarden compares logins: by one key, the login lowercased by Unicode's rules
//! (`str::to_lowercase`, the same in every locale). Firewall keys from policy.toml, the admin
//! API and the store, the login of every `allow`, and the block log's login filter all go
//! through `key`, so a mailbox matches its rules however its name was written.
//!
//! Dovecot's `auth_username_format` (`%Lu` in 2.3, `%{user | lower}` in 2.4) lowercases
//! ASCII only: Dovecot never calls `setlocale`, so its `tolower` runs in the C locale.
//! `ÄRZTE@Example.de` arrives as `Ärzte@example.de`, and a passdb with a case-insensitive
//! collation lets `ärzte@example.de` into the same mailbox. Lowercasing with ASCII rules, as
//! Dovecot does, would key those two apart, and a firewall one spelling escapes is no firewall;
//! Unicode's rules give both (and `ÄRZTE@EXAMPLE.DE`) the key `ärzte@example.de`. No other
//! folding is done (no trimming, no Unicode normal form): Dovecot passes those bytes through.

use std::borrow::Cow;

/// The login's key. Borrows when the login is already its own key, which is the common case:
/// Dovecot lowercases ASCII, and most logins are ASCII.
pub fn key(login: &str) -> Cow<'_, str> {
    if login.is_ascii() {
        if login.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(login.to_ascii_lowercase())
        } else {
            Cow::Borrowed(login)
        }
    } else {
        let lowered = login.to_lowercase();
        if lowered == login { Cow::Borrowed(login) } else { Cow::Owned(lowered) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_login_has_one_key() {
        for (written, expected) in [
            ("alice@example.com", "alice@example.com"),
            ("Alice@Example.COM", "alice@example.com"),
            ("Jörg@Example.com", "jörg@example.com"),
            ("JÖRG@EXAMPLE.COM", "jörg@example.com"),
            // What Dovecot sends for ÄRZTE@example.de: only the ASCII letters lowercased.
            ("Ärzte@example.de", "ärzte@example.de"),
            ("ÄRZTE@example.de", "ärzte@example.de"),
            ("ärzte@example.de", "ärzte@example.de"),
        ] {
            assert_eq!(key(written), expected, "{written}");
            assert_eq!(key(&key(written)), expected, "the key of a key is itself: {written}");
        }
        assert!(matches!(key("bob@example.com"), Cow::Borrowed(_)));
        assert!(matches!(key("jörg@example.com"), Cow::Borrowed(_)));
    }
}
