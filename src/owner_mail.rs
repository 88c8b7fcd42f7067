//! The mail to the mailbox owner: when one of their devices is quarantined for a stale
//! password, or their account comes under attack, mailwarden writes to them in plain words
//! what was seen (the mail app, protocol, address and its country, since when, how many tries),
//! what was and was not blocked, and what to do. Some mail apps (Thunderbird) never show the
//! server's refusal, so this mail is how the person who can fix a lockout learns of it.
//!
//! A reader of the notice stream (`notify::Sink`): the dispatcher hands it notices, which it
//! queues to its own thread, so a slow mail server delays nobody. At most one mail per account
//! and mail app (or per attack) in `per_device_every`; never a password hash or anything else
//! that helps an attacker (the notices carry none).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;
use serde_json::Value;

use crate::clock::{Clock, Timestamp};
use crate::mailer::{self, Mail, SmtpSettings};
use crate::notify::{Notice, NoticeKind, Sink};

/// `[owner_mail]`.
#[derive(Debug, Clone)]
pub struct OwnerMailSettings {
    pub enabled: bool,
    pub smtp: SmtpSettings,
    /// For logins that are not addresses: the recipient, with `{login}`; empty: none.
    pub recipient: String,
    /// Login keys and `@domain`s that never get a notice.
    pub skip: Vec<String>,
    pub per_device_every: Duration,
    /// Every text, by key (`[owner_mail.text]` over the defaults).
    pub text: BTreeMap<String, String>,
    /// From `[self_service]`: who runs the service, and where people get help.
    pub provider: String,
    pub support: String,
}

/// The texts, in English; `{name}` placeholders are filled in per notice.
pub fn default_texts() -> BTreeMap<String, String> {
    [
        ("stale_subject", "A device is using an old password for {login}"),
        (
            "stale_body",
            "Hello,\n\n\
             {provider} noticed that one of your devices keeps trying to log in to {login} with a password that is no longer valid.\n\n\
             What we saw:\n\
             \x20 Mail app: {device}\n\
             \x20 Protocol: {protocol}\n\
             \x20 From:     {address}{country}\n\
             \x20 Since:    {since}\n\
             \x20 Tries:    {tries}\n\n\
             What we did: we stopped accepting that old password from that address for a while, so the device cannot lock you out. \
             Your other devices are not affected, and your account is not blocked.\n\n\
             What to do: open the mail app on that device ({device}) and enter your current password in its account settings. \
             If you do not recognise the device, change your password and contact {support}.\n\n\
             This message was sent automatically by {provider}.\n",
        ),
        ("attack_subject", "Someone is trying to guess the password of {login}"),
        (
            "attack_body",
            "Hello,\n\n\
             {provider} noticed wrong passwords for {login} from {sources} different addresses since {since}: someone is trying to guess it.\n\n\
             What we did: logins to {login} from addresses you have not used lately are slowed down or refused while this lasts. \
             Your own devices, on the addresses they use, are not affected.\n\n\
             What to do: nothing, if your password is long and used nowhere else. Otherwise change it, and contact {support} if you need help.\n\n\
             This message was sent automatically by {provider}.\n",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Where `login`'s notices go: the login itself when it is an address, else the
/// `recipient` template; `None` when neither, or when the mailbox or its domain is skipped.
pub fn recipient(login: &str, settings: &OwnerMailSettings) -> Option<String> {
    let key = crate::login::key(login);
    let domain = key.rfind('@').map(|at| &key[at..]);
    if settings.skip.iter().any(|s| *s == *key || Some(s.as_str()) == domain) {
        return None;
    }
    if login.contains('@') {
        Some(login.to_string())
    } else if settings.recipient.is_empty() {
        None
    } else {
        Some(settings.recipient.replace("{login}", login))
    }
}

/// The `kind` label of the owner-mail metric, and whether a notice is one the owner gets.
fn kind_label(kind: NoticeKind) -> Option<&'static str> {
    match kind {
        NoticeKind::QuarantineStarted => Some("stale_device"),
        NoticeKind::AttackStarted => Some("attack"),
        _ => None,
    }
}

fn text<'a>(facts: &'a serde_json::Map<String, Value>, key: &str) -> &'a str {
    facts.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn number(facts: &serde_json::Map<String, Value>, key: &str) -> String {
    facts.get(key).and_then(Value::as_u64).map(|n| n.to_string()).unwrap_or_default()
}

/// A time fact in the form people read (the fact as sent when it is not a time).
fn readable(rfc3339: &str) -> String {
    Timestamp::parse_rfc3339(rfc3339).map_or_else(|| rfc3339.to_string(), Timestamp::readable)
}

/// The mail for `notice`, or `None` when it is not one the owner gets.
pub fn compose(notice: &Notice, settings: &OwnerMailSettings) -> Option<(String, Mail)> {
    let facts = &notice.facts;
    let login = text(facts, "login");
    let to = recipient(login, settings)?;
    let (subject_key, body_key) = match notice.kind {
        NoticeKind::QuarantineStarted => ("stale_subject", "stale_body"),
        NoticeKind::AttackStarted => ("attack_subject", "attack_body"),
        _ => return None,
    };
    let device = match text(facts, "device") {
        "" => "a mail app that did not give its name".to_string(),
        name => name.to_string(),
    };
    let country = match text(facts, "country") {
        "" => String::new(),
        code => format!(" (country: {code})"),
    };
    let address = match text(facts, "address") {
        "" => text(facts, "source"),
        address => address,
    };
    let values: [(&str, String); 10] = [
        ("login", login.to_string()),
        ("device", device),
        ("protocol", text(facts, "protocol").to_uppercase()),
        ("address", address.to_string()),
        ("country", country),
        ("since", readable(text(facts, "since"))),
        ("tries", number(facts, "failures")),
        ("sources", number(facts, "sources")),
        ("provider", settings.provider.clone()),
        ("support", settings.support.clone()),
    ];
    let fill = |key: &str| {
        let mut out = settings.text.get(key).cloned().unwrap_or_default();
        for (name, value) in &values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    };
    // One notice per account and mail app (per attack: per account).
    let device_key = match notice.kind {
        NoticeKind::QuarantineStarted => text(facts, "device").to_string(),
        _ => String::from("attack"),
    };
    let once_key = format!("{}\u{0}{device_key}", crate::login::key(login));
    // A subject is one line, whatever the template says.
    let subject: String = fill(subject_key).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    Some((once_key, Mail { to, subject, body: fill(body_key) }))
}

/// Notices waiting for the mail thread; more are dropped and counted.
const QUEUE: usize = 1000;
/// Accounts remembered for the once-per-`per_device_every` rule; past it the oldest go.
const REMEMBERED: usize = 100_000;

/// The sink: its settings (swapped on reload) and its thread.
pub struct OwnerMail {
    settings: Arc<ArcSwap<OwnerMailSettings>>,
    sender: Mutex<Option<SyncSender<Notice>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    counter: IntCounterVec,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OwnerMail {
    pub fn start(settings: OwnerMailSettings, clock: Arc<dyn Clock>, counter: IntCounterVec) -> Arc<OwnerMail> {
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let worker = {
            let (settings, counter) = (settings.clone(), counter.clone());
            crate::background::spawn("owner-mail", move || run(receiver, &settings, &*clock, &counter)).ok()
        };
        if worker.is_none() {
            tracing::error!("could not start the owner-mail thread; no notices will be mailed");
        }
        Arc::new(OwnerMail { settings, sender: Mutex::new(Some(sender)), worker: Mutex::new(worker), counter })
    }

    /// A reload's settings, in force from the next notice.
    pub fn set_settings(&self, settings: OwnerMailSettings) {
        self.settings.store(Arc::new(settings));
    }
}

impl Sink for OwnerMail {
    fn accept(&self, notice: &Notice) {
        let Some(kind) = kind_label(notice.kind) else { return };
        if !self.settings.load().enabled {
            return;
        }
        let sent = lock(&self.sender).as_ref().map(|sender| sender.try_send(notice.clone()));
        if let Some(Err(TrySendError::Full(_))) = sent {
            self.counter.with_label_values(&[kind, "dropped"]).inc();
        }
    }

    fn close(&self) {
        lock(&self.sender).take();
        if let Some(worker) = lock(&self.worker).take() {
            let _ = worker.join();
        }
    }
}

/// The mail thread: composes, keeps to one mail per account and device per period, sends.
fn run(receiver: Receiver<Notice>, settings: &ArcSwap<OwnerMailSettings>, clock: &dyn Clock, counter: &IntCounterVec) {
    let mut last_sent: HashMap<String, Timestamp> = HashMap::new();
    for notice in receiver {
        let Some(kind) = kind_label(notice.kind) else { continue };
        let settings = settings.load();
        let count = |result: &str| counter.with_label_values(&[kind, result]).inc();
        let Some((once_key, mail)) = compose(&notice, &settings) else {
            count("no_recipient");
            continue;
        };
        let now = clock.now();
        let since = now.minus(settings.per_device_every);
        if last_sent.get(&once_key).is_some_and(|at| *at > since) {
            count("rate_limited");
            continue;
        }
        if last_sent.len() >= REMEMBERED {
            last_sent.retain(|_, at| *at > since);
            if last_sent.len() >= REMEMBERED {
                last_sent.clear();
            }
        }
        match mailer::send(&settings.smtp, &mail) {
            Ok(()) => {
                last_sent.insert(once_key, now);
                count("sent");
                tracing::info!(kind, "mailed the mailbox owner");
            }
            Err(e) => {
                count("failed");
                tracing::warn!(kind, error = %e, "could not mail the mailbox owner");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OwnerMailSettings {
        OwnerMailSettings {
            enabled: true,
            smtp: SmtpSettings {
                url: "smtp://127.0.0.1:25".into(),
                user: String::new(),
                password: None,
                from: "postmaster@example.com".into(),
            },
            recipient: "{login}@example.net".into(),
            skip: vec!["@quiet.example".into(), "bob@example.com".into()],
            per_device_every: Duration::from_secs(86_400),
            text: default_texts(),
            provider: "Example Mail".into(),
            support: "help@example.com".into(),
        }
    }

    fn quarantine(login: &str, device: &str) -> Notice {
        let facts = serde_json::json!({
            "login": login, "source": "203.0.113.7", "address": "203.0.113.7", "protocol": "imap",
            "device_id": format!("\"name\" \"{device}\""), "device": device, "failures": 12,
            "since": "2026-12-01T08:00:00Z", "country": "FR",
        });
        let Value::Object(facts) = facts else { unreachable!() };
        Notice::new(NoticeKind::QuarantineStarted, Timestamp(0), None, facts)
    }

    #[test]
    fn the_login_is_the_recipient_when_it_is_an_address_and_the_template_otherwise() {
        let s = settings();
        assert_eq!(recipient("alice@example.com", &s).as_deref(), Some("alice@example.com"));
        assert_eq!(recipient("alice", &s).as_deref(), Some("alice@example.net"));
        assert_eq!(recipient("Bob@Example.com", &s), None, "a mailbox turned off, in any case");
        assert_eq!(recipient("carol@QUIET.example", &s), None, "a domain turned off");
        let no_template = OwnerMailSettings { recipient: String::new(), ..s };
        assert_eq!(recipient("alice", &no_template), None);
    }

    #[test]
    fn the_notice_names_the_mail_app_what_was_blocked_and_what_to_do_in_plain_words() {
        let (key, mail) = compose(&quarantine("alice@example.com", "Thunderbird 115"), &settings()).unwrap();
        assert_eq!(mail.to, "alice@example.com");
        assert_eq!(mail.subject, "A device is using an old password for alice@example.com");
        for expected in [
            "Mail app: Thunderbird 115",
            "Protocol: IMAP",
            "From:     203.0.113.7 (country: FR)",
            "Since:    2026-12-01 08:00:00 UTC",
            "Tries:    12",
            "Your other devices are not affected",
            "enter your current password",
            "contact help@example.com",
        ] {
            assert!(mail.body.contains(expected), "{expected:?} in {}", mail.body);
        }
        assert!(!mail.body.contains('{'), "every placeholder filled: {}", mail.body);
        let (other, _) = compose(&quarantine("Alice@Example.com", "K-9 Mail"), &settings()).unwrap();
        assert_ne!(key, other, "another mail app is another notice");
        let (same, _) = compose(&quarantine("ALICE@example.com", "Thunderbird 115"), &settings()).unwrap();
        assert_eq!(key, same, "the same account and mail app, however the login is spelt");
    }

    #[test]
    fn an_attack_notice_tells_the_owner_their_devices_keep_working_and_what_to_do() {
        let notice = Notice::attack(
            NoticeKind::AttackStarted,
            "alice",
            12,
            Timestamp(1_796_112_000_000),
            Timestamp(1_796_112_060_000),
        );
        let (key, mail) = compose(&notice, &settings()).unwrap();
        assert_eq!(mail.to, "alice@example.net", "a plain login through the recipient template");
        assert_eq!(mail.subject, "Someone is trying to guess the password of alice");
        assert!(mail.body.contains("from 12 different addresses since 2026-12-01"), "{}", mail.body);
        assert!(mail.body.contains("Your own devices, on the addresses they use, are not affected"), "{}", mail.body);
        assert!(!mail.body.contains('{'), "{}", mail.body);
        let (stale_key, _) = compose(&quarantine("alice", "Thunderbird 115"), &settings()).unwrap();
        assert_ne!(key, stale_key, "an attack and a stale device are separate notices");
    }

    #[test]
    fn other_notices_are_not_mailed_to_the_owner() {
        let notice = Notice::new(NoticeKind::BanPlaced, Timestamp(0), None, Default::default());
        assert!(compose(&notice, &settings()).is_none());
    }
}
