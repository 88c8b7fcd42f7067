//! End to end: the mail to the mailbox owner about the device with the old password. A laptop
//! keeps logging in to a real Dovecot over IMAP with an old password until mailwarden
//! quarantines that password; mailwarden mails the owner through a real Postfix on loopback,
//! which relays to Dovecot's LMTP into the owner's Maildir; the owner reads the notice over
//! IMAP from their phone, with the current password, as a person would.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use support::dovecot::{self, Dovecot, LAPTOP_OWNER, imap_inbox, imap_login_with_id};
use support::mailwarden::Mailwarden;
use support::postfix::{self, Postfix};

const OLD_PASSWORD: &str = "laptop-owner-OLD-secret";

/// The message as a mail app shows it: a quoted-printable body decoded (soft line breaks
/// joined, `=XX` turned back into its byte).
fn readable(message: &str) -> String {
    if !message.contains("Content-Transfer-Encoding: quoted-printable") {
        return message.to_string();
    }
    let joined = message.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The owner's INBOX once it holds `count` messages (or what it holds after 20 s).
fn inbox_with(dovecot: &Dovecot, phone: Ipv4Addr, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let messages = imap_inbox(dovecot, phone, LAPTOP_OWNER.0, LAPTOP_OWNER.1);
        if messages.len() >= count || Instant::now() > deadline {
            return messages;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_owner_of_a_laptop_with_an_old_password_gets_one_plain_notice_naming_its_mail_app() {
    if !dovecot::require_dovecot() || !dovecot::require_dovecot_lmtp() || !postfix::require_postfix() {
        return;
    }
    let mut mailwarden = Mailwarden::configure("");
    let dovecot = Dovecot::start_with_delivery(&mailwarden.policy_url(), &mailwarden.api_key);
    let postfix = Postfix::start(dovecot.lmtp_port());
    let owner_mail = format!(
        "[self_service]\nprovider_name = \"Example Mail\"\nsupport_contact = \"help@example.com\"\n\
         [owner_mail]\nenabled = true\nsmtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"postmaster@example.com\"\n",
        postfix.port()
    );
    mailwarden.write_config("", &owner_mail);
    mailwarden.restart();
    let logs = || format!("\n--- postfix ---\n{}\n--- mailwarden ---\n{}", postfix.log(), mailwarden.log());

    let laptop = Ipv4Addr::new(127, 0, 0, 41);
    let phone = Ipv4Addr::new(127, 0, 0, 42);
    let thunderbird = [("name", "Thunderbird"), ("version", "115.3")];
    assert!(imap_inbox(&dovecot, phone, LAPTOP_OWNER.0, LAPTOP_OWNER.1).is_empty(), "an empty INBOX to start");
    // The laptop retries its saved, old password, as mail apps do, until it is quarantined.
    let mut quarantined = false;
    for _ in 0..6 {
        let outcome = imap_login_with_id(&dovecot, laptop, &thunderbird, LAPTOP_OWNER.0, OLD_PASSWORD);
        assert!(!outcome.ok, "the old password never logs in");
        quarantined |= outcome.line.contains("old password");
    }
    assert!(quarantined, "the laptop's old password is quarantined{}", logs());

    let messages = inbox_with(&dovecot, phone, 1);
    assert_eq!(messages.len(), 1, "one notice in the owner's INBOX{}", logs());
    let notice = &readable(&messages[0]);
    for expected in [
        "Subject: A device is using an old password for laptop-owner@example.com",
        "From: postmaster@example.com",
        "Mail app: Thunderbird 115.3",
        "Protocol: IMAP",
        "From:     127.0.0.41",
        "Tries:    3",
        "Your other devices are not affected",
        "enter your current password",
        "contact help@example.com",
        "This message was sent automatically by Example Mail.",
    ] {
        assert!(notice.contains(expected), "{expected:?} in the notice:\n{notice}");
    }
    assert!(!notice.contains(OLD_PASSWORD) && !notice.to_lowercase().contains("pwhash"), "{notice}");

    // The same laptop, later on another network, with the same old password: quarantined
    // there too, but the owner already knows; no second mail that day.
    let elsewhere = Ipv4Addr::new(127, 0, 0, 43);
    for _ in 0..4 {
        imap_login_with_id(&dovecot, elsewhere, &thunderbird, LAPTOP_OWNER.0, OLD_PASSWORD);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let rate_limited = "mailwarden_owner_mails_total{kind=\"stale_device\",result=\"rate_limited\"} 1";
    while !mailwarden.admin("GET", "/metrics").1.contains(rate_limited) {
        assert!(Instant::now() < deadline, "the second quarantine was held back{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(imap_inbox(&dovecot, phone, LAPTOP_OWNER.0, LAPTOP_OWNER.1).len(), 1, "still exactly one notice");
    let metrics = mailwarden.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_owner_mails_total{kind=\"stale_device\",result=\"sent\"} 1"), "{metrics}");
}
