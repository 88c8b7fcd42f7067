//! The application core without HTTP: gathers the facts for a login attempt from in-memory
//! state, asks the engine, applies the effects (count a failure, place a ban, record an
//! event) and writes them through to the durable store; keeps the admin lists and the
//! firewall rule sets and applies reloaded policies. A cheap `Clone` handle around shared
//! state, used by the policy and admin listeners, the reloader and the background tasks.
//!
//! Methods that touch the store block (they are run on blocking threads by `http` and
//! `server`); `allow`, `report`, `decide` and `explain` never touch it and never block.
//!
//! One file per concern: this one (decisions, reports, bans, reload), `lists` (the admin
//! lists), `rules` (the mailbox firewall), `explain` (the dry run), `lengthen` (a ban given a
//! later end by hand).

mod audit;
mod console;
mod detection;
mod drops;
mod explain;
mod lengthen;
mod lists;
mod overview;
mod reset;
mod rules;
mod sync;
#[cfg(test)]
mod tests;
mod tokens;
mod unblock;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use ipnet::IpNet;

pub use console::{ConsoleSession, SignInRefusal};
pub use detection::{Counted, CountedFailure, Diagnosis, ReportEffects, device_name};
pub use explain::Explanation;
pub use lengthen::{LONGEST_LENGTHENING, LONGEST_LENGTHENING_TEXT, LengthenError, Lengthening};
pub use lists::{ListChange, ListError};
pub use overview::{HISTORY_LIMIT, LoginHistory, Place, RecentActivity};
pub use reset::LoginReset;
pub use rules::{FirewallCheck, FirewallError, MailboxFirewall, RuleMove};
pub use sync::{Restored, Resynced};
pub use tokens::{AuthRefusal, NewToken, TokenError};
pub use unblock::{SelfUnblockError, VisitorStatus};

use crate::access::{AccessEntry, AccessLists, ListKind, Standing};
use crate::accounts::AccountTracker;
use crate::audit::AuditAction;
use crate::bans::{Ban, BanIndex, BanKey};
use crate::bounded::BoundedMap;
use crate::clock::{Clock, Timestamp};
use crate::config::{OnStoreError, Policy};
use crate::digest::Digest;
use crate::engine::{self, AllowFacts, Decision, Observing, Refusal, Ruling};
use crate::events::{Event, EventFilter, EventKind, EventPage};
use crate::failures::FailureTracker;
use crate::firewall::{Firewall, RuleSet};
use crate::geoip::GeoIp;
use crate::journal::{Journal, Keep};
use crate::metrics::Metrics;
use crate::network::{Source, SourceGrouping};
use crate::notify::outbox::Outbox;
use crate::notify::webhooks::Webhooks;
use crate::notify::{LiftCause, Notice, NoticeKind, Notifier, Sink};
use crate::owner_mail::OwnerMail;
use crate::principal::Principal;
use crate::store::{Store, StoreError};
use crate::tolerance::ToleranceTracker;
use crate::wire::{self, LoginAttempt, Protocol, Reply};

#[derive(Clone)]
pub struct Warden {
    shared: Arc<Shared>,
}

struct Shared {
    /// The policy in force; replaced whole on reload, read without locking.
    policy: ArcSwap<Policy>,
    /// The admin lists from the policy file and the API combined; rebuilt on every change.
    access: ArcSwap<AccessLists>,
    /// The API's list entries (the store holds the same); the source of each rebuild.
    api_entries: Mutex<HashMap<(ListKind, IpNet), AccessEntry>>,
    /// Every firewall rule set in force (the file's, overridden by the API's) and the webmail
    /// networks; rebuilt on every change.
    firewall: ArcSwap<Firewall>,
    /// The API's rule sets by key (the store holds the same).
    api_rule_sets: Mutex<HashMap<String, RuleSet>>,
    /// The GeoIP databases; replaced when the settings change on reload.
    geoip: ArcSwap<GeoIp>,
    /// Writes the block log and known sources in the background (shared with the webhook
    /// delivery threads, which note a failing endpoint there).
    journal: Arc<Journal>,
    /// The stream of notices every notifier reads (webhooks, the owners' mail).
    notifier: Notifier,
    /// The mail to mailbox owners, a reader of `notifier` (kept to give it reloaded settings).
    owner_mail: Arc<OwnerMail>,
    /// The admins' digest, another reader of `notifier`.
    digest: Arc<Digest>,
    /// Accounts whose attack was announced, and since when, so its end is announced too
    /// (memory only; at most the accounts under attack).
    attacks_announced: Mutex<HashMap<Box<str>, Timestamp>>,
    /// How long the journal's records are kept (read by its writer thread; set on reload).
    keep: Arc<Mutex<Keep>>,
    /// Accounts under a distributed attack (memory only, bounded).
    accounts: AccountTracker,
    /// When each source was last banned and for how long, for escalating repeat offenders
    /// (memory only, bounded).
    ban_history: moka::sync::Cache<Source, (Timestamp, std::time::Duration)>,
    /// (login, source) pairs recorded as known lately, so a busy account is not written on
    /// every successful login (memory only, bounded).
    known_recorded: BoundedMap<u64, Option<Timestamp>>,
    /// Keys the hashes of `known_recorded`.
    known_recorded_keys: crate::hashing::Keyed,
    /// (login, source, kind) of expired or disabled accounts already in the block log within
    /// the window, so repeats are not written again (memory only, bounded).
    unusable_noted: moka::sync::Cache<(Box<str>, Source, &'static str), ()>,
    /// The self-service page's flood guard (per source, memory only; the daily count of
    /// unblocks and the used challenges are in the store).
    page_requests: crate::selfservice::PageRequests,
    /// Sources whose refusal for a ban or a blocked network is in the block log within the
    /// last `REFUSAL_NOTED_FOR`: their further refusals are answered but not recorded, so one
    /// client retrying in a loop cannot push everyone else's history out (memory only, bounded).
    refusals_noted: moka::sync::Cache<(Source, EventKind, bool), ()>,
    clock: Arc<dyn Clock>,
    /// Failed-login history per source (memory only, bounded).
    failures: FailureTracker,
    /// The good accounts of each source, which raise its ban threshold (memory only,
    /// bounded; earned again from the logins after a restart).
    tolerance: ToleranceTracker,
    /// Active bans (memory mirror of the store, unbounded).
    bans: BanIndex,
    /// The sources of each subnet banned lately, for subnet bans (memory only, bounded).
    subnets: crate::subnets::SubnetWatch,
    store: Arc<dyn Store>,
    /// Bans in force that the store could not take (it was unreachable); `cluster` stores
    /// them when it is back.
    unsaved_bans: Mutex<HashMap<BanKey, Arc<Ban>>>,
    /// Where counted failures and successes go for the other nodes (cluster mode only).
    count_sharing: OnceLock<Box<dyn Fn(Counted) + Send + Sync>>,
    /// Told when the admin lists change (the host firewall's worker; bans tell it themselves).
    drops_watch: OnceLock<Arc<dyn Fn() + Send + Sync>>,
    metrics: Metrics,
    /// The admin API's stored tokens by digest (the store holds the same); replaced whole.
    tokens: crate::tokens::Tokens,
    /// Failed bearer authentications per client address (memory only, bounded).
    sign_in: crate::tokens::SignInGuard,
    /// The console's open sessions (memory only, bounded).
    sessions: crate::sessions::Sessions,
    /// Counts per minute of the last day's decisions and bans, for the overview (memory
    /// only, fixed size).
    activity: crate::activity::Activity,
    /// Held while a ban is checked for and placed, so two threads never place one twice.
    placing_bans: Mutex<()>,
}

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("firewall rules need GeoIP data that is not configured:\n  - {}", .0.join("\n  - "))]
    Rules(Vec<String>),
    #[error("cannot open the webhook outbox in server.state_dir: {0}")]
    Outbox(String),
}

/// How long a banned or blocked source's refusal stands for its repeats in the block log: a
/// mail app retries every few seconds, and one line a minute tells the admin as much.
const REFUSAL_NOTED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// A login as `allow` sees it: from Dovecot, or described by the dry run.
#[derive(Debug, Clone, Copy)]
pub struct LoginView<'a> {
    /// The client address (`remote`).
    pub address: Option<IpAddr>,
    /// The TCP peer (`real_remote`), which tells webmail apart.
    pub real_remote: Option<IpAddr>,
    pub login: &'a str,
    /// Dovecot's `pwhash`, when known (the dry run has none).
    pub pwhash: Option<&'a str>,
    pub protocol: Protocol,
}

impl<'a> LoginView<'a> {
    pub fn of(attempt: &'a LoginAttempt<'a>) -> LoginView<'a> {
        LoginView {
            address: attempt.remote,
            real_remote: attempt.real_remote,
            login: &attempt.login,
            pwhash: Some(&attempt.pwhash),
            protocol: attempt.protocol,
        }
    }
}

/// The policy file's firewall rules that need GeoIP data `geoip` does not provide, as
/// messages naming the mailbox and the rule (what `check-config` reports).
pub fn file_rule_problems(policy: &Policy, geoip: &GeoIp) -> Vec<String> {
    rules::check_sources(policy, &HashMap::new(), geoip)
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the store holds, or nothing when it is unreachable (a cluster's Redis down at start):
/// the node then starts from the policy file and loads the shared state once Redis answers.
fn unless_unreachable<T>(loaded: Result<Vec<T>, StoreError>) -> Result<Vec<T>, StoreError> {
    match loaded {
        Err(StoreError::Unavailable(_)) => Ok(Vec::new()),
        other => other,
    }
}

/// Learns again, from the known sources in the store, the tolerance the sources earned before a
/// restart, so that an office is not a stranger for a week after one. A failure only costs
/// that: it is logged, and the start goes on.
fn learn_tolerance(
    tolerance: &ToleranceTracker,
    store: &dyn Store,
    policy: &Policy,
    metrics: &Metrics,
    now: Timestamp,
) {
    let toleration = &policy.autoban.toleration;
    if toleration.per_account == 0 {
        return;
    }
    // Rows are (account, source) pairs; more than the tracker holds would only be evicted.
    let limit = usize::try_from(policy.autoban.max_tolerated_sources).unwrap_or(usize::MAX).min(1_000_000);
    let recent = store.recent_known_sources(now.minus(toleration.window), limit);
    metrics.store_result("load_known_sources", &recent);
    match recent {
        Ok(known) => {
            for record in known {
                if let Some(source) = policy.autoban.grouping.regroup(record.source) {
                    tolerance.record_success(source, &record.login, record.at.min(now), toleration);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read the known sources; toleration starts from nothing"),
    }
}

/// The block-log record of `attempt` (no rule, not observed).
fn attempt_event(attempt: &LoginAttempt<'_>, kind: EventKind, at: Timestamp, detail: String) -> Event {
    Event {
        at,
        kind,
        login: attempt.login.to_string(),
        ip: attempt.remote,
        protocol: attempt.protocol.label().to_string(),
        device_id: attempt.device_id.to_string(),
        rule: None,
        detail,
        observed: false,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Warden {
    /// Builds the core: loads the active bans, list entries and rule sets from `store`, checks
    /// every rule set against the GeoIP data available, and starts the block log.
    pub fn open(
        policy: Policy,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        geoip: GeoIp,
    ) -> Result<Warden, OpenError> {
        let now = clock.now();
        let failures = FailureTracker::new(
            policy.autoban.window,
            policy.autoban.max_tracked_sources,
            metrics.tracked_source_evictions.clone(),
        );
        failures.set_counting(detection::counting(&policy));
        let bans = BanIndex::default();
        let loaded = store.active_bans(now);
        metrics.store_result("load_bans", &loaded);
        for ban in unless_unreachable(loaded)? {
            bans.insert(Arc::new(ban));
        }
        let entries = store.access_entries();
        metrics.store_result("load_list_entries", &entries);
        let api_entries: HashMap<_, _> =
            unless_unreachable(entries)?.into_iter().map(|e| ((e.list, e.network), e)).collect();
        let access = lists::build_access(&policy, &api_entries, now);
        let sets = store.firewall_rule_sets();
        metrics.store_result("load_firewall_rules", &sets);
        let api_rule_sets: HashMap<String, RuleSet> =
            unless_unreachable(sets)?.into_iter().map(|s| (s.key, s.rule_set)).collect();
        let problems = rules::check_sources(&policy, &api_rule_sets, &geoip);
        if !problems.is_empty() {
            return Err(OpenError::Rules(problems));
        }
        let firewall = rules::build_firewall(&policy, &api_rule_sets);
        let stored_tokens = store.tokens();
        metrics.store_result("load_tokens", &stored_tokens);
        let tokens = crate::tokens::Tokens::default();
        tokens.replace(unless_unreachable(stored_tokens)?);
        let keep = Arc::new(Mutex::new(detection::keep(&policy)));
        let journal = Arc::new(Journal::start(
            store.clone(),
            clock.clone(),
            keep.clone(),
            metrics.events.clone(),
            metrics.known_sources.clone(),
        ));
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        if !policy.webhooks.is_empty() {
            let state_dir = &policy.server.state_dir;
            let outbox = crate::state_dir::create(state_dir)
                .map_err(|e| e.to_string())
                .and_then(|()| Outbox::open(state_dir).map_err(|e| e.to_string()))
                .map_err(OpenError::Outbox)?;
            let webhooks =
                Webhooks::start(&policy.webhooks, outbox, clock.clone(), metrics.webhooks.clone(), journal.clone());
            sinks.push(Arc::new(webhooks));
        }
        let owner_mail = OwnerMail::start(policy.owner_mail.clone(), clock.clone(), metrics.owner_mails.clone());
        sinks.push(owner_mail.clone());
        let digest = Digest::start(policy.digest.clone(), clock.clone(), metrics.digests.clone());
        sinks.push(digest.clone());
        let notifier = Notifier::start(sinks, metrics.notifications.clone());
        let protection = &policy.account_protection;
        let policy_window = policy.autoban.window;
        let max_tolerated_sources = policy.autoban.max_tolerated_sources;
        let tolerance = ToleranceTracker::new(max_tolerated_sources);
        learn_tolerance(&tolerance, &*store, &policy, &metrics, now);
        let accounts = AccountTracker::new(protection.max_tracked_accounts);
        let ban_history = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs(30 * 24 * 3600))
            .build();
        let known_recorded = BoundedMap::new(200_000, |_| {});
        metrics.active_bans.set(gauge_value(bans.len()));
        let shared = Shared {
            policy: ArcSwap::from_pointee(policy),
            access: ArcSwap::from_pointee(access),
            api_entries: Mutex::new(api_entries),
            firewall: ArcSwap::from_pointee(firewall),
            api_rule_sets: Mutex::new(api_rule_sets),
            geoip: ArcSwap::from_pointee(geoip),
            journal,
            notifier,
            owner_mail,
            digest,
            attacks_announced: Mutex::new(HashMap::new()),
            keep,
            accounts,
            ban_history,
            known_recorded,
            known_recorded_keys: Default::default(),
            unusable_noted: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(policy_window).build(),
            page_requests: crate::selfservice::PageRequests::new(),
            refusals_noted: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(REFUSAL_NOTED_FOR).build(),
            clock,
            failures,
            tolerance,
            bans,
            subnets: crate::subnets::SubnetWatch::new(100_000),
            store,
            unsaved_bans: Mutex::new(HashMap::new()),
            count_sharing: OnceLock::new(),
            drops_watch: OnceLock::new(),
            metrics,
            tokens,
            sign_in: crate::tokens::SignInGuard::default(),
            sessions: crate::sessions::Sessions::default(),
            placing_bans: Mutex::new(()),
            activity: crate::activity::Activity::default(),
        };
        Ok(Warden { shared: Arc::new(shared) })
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy.load_full()
    }

    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn standing(&self, address: Option<IpAddr>, now: Timestamp) -> Standing {
        match address {
            Some(ip) => self.shared.access.load().standing(ip, now),
            None => Standing::Unlisted,
        }
    }

    /// Decides an `allow` request without changing any state (parts in observe mode skipped).
    pub fn decide(&self, view: &LoginView<'_>) -> Decision {
        self.rule(view).decision
    }

    /// Decides an `allow` request without changing any state, with what observe mode held back.
    pub fn rule(&self, view: &LoginView<'_>) -> Ruling {
        self.rule_with(view, &self.firewall_check(view))
    }

    pub(super) fn rule_with(&self, view: &LoginView<'_>, firewall: &FirewallCheck) -> Ruling {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let standing = self.standing(view.address, now);
        let policy = shared.policy.load();
        let ban = view.address.and_then(|ip| self.ban_refusing(ip, now, &policy));
        let login_refusal =
            view.address.and_then(|ip| shared.bans.active_login_refusal(ip, policy.autoban.grouping, view.login, now));
        let refuse_while_store_unreachable =
            policy.store.on_store_error == OnStoreError::Reject && !shared.store.is_up();
        engine::rule_allow(&AllowFacts {
            refuse_while_store_unreachable,
            address: view.address,
            standing,
            ban: ban.as_deref(),
            login_refusal: login_refusal.as_deref(),
            firewall: firewall.outcome(),
            login: view.login,
            stale_guess: self.stale_guess(view, now),
            unknown_source_under_attack: self.unknown_source_under_attack(view, now),
            observing: Observing { everything: policy.server.observe, firewall: firewall.observed() },
            now,
        })
    }

    /// Answers Dovecot's `allow`; every refusal goes to the block log, and so does every
    /// refusal observe mode held back ("would refuse"), marked as such.
    pub fn allow(&self, attempt: &LoginAttempt<'_>) -> Reply {
        let ruling = self.rule(&LoginView::of(attempt));
        let metrics = &self.shared.metrics;
        let protocol = attempt.protocol.label();
        let decision = &ruling.decision;
        metrics.decisions.of(&[decision.verdict(), decision.reason(), protocol]).inc();
        let now = self.shared.clock.now();
        self.shared.activity.record(crate::activity::Kind::of(decision), now);
        let messages = &self.shared.policy.load().messages;
        let reply = wire::allow_reply(decision, messages, now);
        self.record_refusal(attempt, decision, &reply.msg, false, now);
        if let Some(observed) = &ruling.observed {
            metrics.observed_decisions.with_label_values(&[observed.verdict(), observed.reason(), protocol]).inc();
            let would = wire::allow_reply(observed, messages, now);
            self.record_refusal(attempt, observed, &would.msg, true, now);
        }
        reply
    }

    /// Records `decision` in the block log when it refused or delayed (`observed`: it only
    /// would have).
    fn record_refusal(
        &self,
        attempt: &LoginAttempt<'_>,
        decision: &Decision,
        msg: &str,
        observed: bool,
        now: Timestamp,
    ) {
        let recorded = match decision {
            Decision::Allow(_) => None,
            Decision::Delay { .. } => Some((EventKind::AccountUnderAttack, None)),
            Decision::Reject(Refusal::Banned { .. }) => Some((EventKind::Ban, None)),
            Decision::Reject(Refusal::LoginRefused { .. }) => Some((EventKind::LoginRefused, None)),
            Decision::Reject(Refusal::Blocked { .. }) => Some((EventKind::Blocked, None)),
            Decision::Reject(Refusal::FirewallRule { rule, .. }) => {
                Some((EventKind::FirewallRule, u32::try_from(*rule).ok()))
            }
            Decision::Reject(Refusal::FirewallDefault { .. }) => Some((EventKind::FirewallDefault, None)),
            Decision::Reject(Refusal::StalePassword { .. }) => Some((EventKind::StalePassword, None)),
            Decision::Reject(Refusal::AccountUnderAttack { .. }) => Some((EventKind::AccountUnderAttack, None)),
            Decision::Reject(Refusal::StoreUnavailable) => Some((EventKind::StoreUnavailable, None)),
        };
        let Some((kind, rule)) = recorded else { return };
        if !self.first_refusal_lately(attempt.remote, kind, observed) {
            return;
        }
        let told = match decision {
            Decision::Delay { seconds, .. } => {
                format!("delayed {seconds}s: the account is under attack and this address is new to it")
            }
            _ => msg.to_string(),
        };
        let detail = if observed { format!("would refuse (observe mode): {told}") } else { told };
        self.shared.journal.event(Event { rule, observed, ..attempt_event(attempt, kind, now, detail) });
    }

    /// Whether a refusal of `kind` from `address` is the first of its source within
    /// `REFUSAL_NOTED_FOR` (always, for refusals that depend on more than the source).
    fn first_refusal_lately(&self, address: Option<IpAddr>, kind: EventKind, observed: bool) -> bool {
        let (Some(ip), EventKind::Ban | EventKind::Blocked) = (address, kind) else { return true };
        let source = self.shared.policy.load().autoban.grouping.source_of(ip);
        self.shared.refusals_noted.entry((source, kind, observed)).or_insert(()).is_fresh()
    }

    /// Writes a ban placed by `report` to the store, and its notice to the notifiers' durable
    /// queue, before `report` answers. Blocking.
    pub fn persist_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        let result = self.shared.store.save_ban(ban);
        let usual = self.shared.policy.load().autoban.ban_for;
        let lengthened = ban.reason == crate::bans::BanReason::Autoban
            && ban.refused_login.is_none()
            && ban.created_at.until(ban.expires_at) > usual;
        self.shared.notifier.publish_durably(Notice::ban_placed(ban, lengthened));
        self.shared.metrics.store_result("save_ban", &result);
        match &result {
            Err(e) => {
                // An unreachable shared store is logged once by the store; the ban is stored
                // when it answers again.
                if !e.is_unavailable() {
                    tracing::error!(source = %ban.source, error = %e, "ban is in force but could not be stored durably");
                }
                lock(&self.shared.unsaved_bans).insert(ban.key(), Arc::new(ban.clone()));
            }
            Ok(()) => {
                lock(&self.shared.unsaved_bans).remove(&ban.key());
            }
        }
        result
    }

    /// The source a network names: an address means the source containing it, a network with
    /// the source prefix means itself.
    /// A ban placed under another grouping (before a reload changed the prefixes) is found
    /// by its own network, or by an address it covers.
    pub fn source_for(&self, target: IpNet) -> Source {
        let grouping = self.shared.policy.load().autoban.grouping;
        let host = target.prefix_len() == target.max_prefix_len();
        let grouped = if host { grouping.source_of(target.addr()) } else { grouping.source_of(target.network()) };
        let now = self.shared.clock.now();
        if self.shared.bans.active(grouped, now).is_some() {
            return grouped;
        }
        let exact = Source::from_network(target);
        if self.shared.bans.active(exact, now).is_some() {
            return exact;
        }
        match self.shared.bans.active_for_address(target.addr(), grouping, now) {
            Some(ban) if host => ban.source,
            _ => grouped,
        }
    }

    /// The active ban on `source`.
    pub fn ban(&self, source: Source) -> Option<Arc<Ban>> {
        self.shared.bans.active(source, self.shared.clock.now())
    }

    /// The active IP+login refusal of `login` (any spelling) from `source`.
    pub fn login_refusal(&self, source: Source, login: &str) -> Option<Arc<Ban>> {
        self.shared.bans.login_refusal(source, login, self.shared.clock.now())
    }

    /// Active bans and IP+login refusals, soonest to end first.
    pub fn bans(&self) -> Vec<Arc<Ban>> {
        self.shared.bans.list(self.shared.clock.now())
    }

    /// Lifts the ban on `source` and forgets its failure history, recorded as `actor`'s.
    /// Blocking.
    pub fn unban(&self, source: Source, actor: &Principal) -> Result<Option<Arc<Ban>>, StoreError> {
        let lifted = self.lift_ban(source, None, LiftCause::Admin, Some(actor))?;
        if let Some(ban) = &lifted {
            let detail = format!("{} ban lifted", ban.reason.label());
            self.record_change(actor, AuditAction::BanLifted, &source.to_string(), detail);
        }
        Ok(lifted)
    }

    /// Lifts the IP+login refusal of `login` (any spelling) from `source` and forgives that
    /// login's guesses from there, so its next wrong password does not refuse it again at
    /// once; the source's other guesses still count. Recorded as `actor`'s. Blocking.
    pub fn unban_login(&self, source: Source, login: &str, actor: &Principal) -> Result<Option<Arc<Ban>>, StoreError> {
        let key = crate::login::key(login);
        let lifted = self.lift_ban(source, Some(&key), LiftCause::Admin, Some(actor))?;
        if lifted.is_some() {
            let detail = format!("IP+login refusal of {key} lifted");
            self.record_change(actor, AuditAction::BanLifted, &source.to_string(), detail);
        }
        Ok(lifted)
    }

    /// "Lift and trust": puts the banned network on the trusted list with `comment` (so it is
    /// never banned again), then lifts the ban on `source` (`login`: that login's IP+login
    /// refusal), recorded as one change of `actor`'s. `None`, changing nothing, when there is
    /// no such ban. Blocking.
    pub fn lift_and_trust(
        &self,
        source: Source,
        login: Option<&str>,
        comment: &str,
        actor: &Principal,
    ) -> Result<Option<Arc<Ban>>, ListError> {
        let key = login.map(crate::login::key);
        let banned = match &key {
            Some(key) => self.login_refusal(source, key),
            None => self.ban(source),
        };
        if banned.is_none() {
            return Ok(None);
        }
        let network = source.network();
        if let Standing::Blocked(blocked) = self.shared.access.load().standing(network.addr(), self.shared.clock.now())
        {
            return Err(ListError::InsideBlocked { network, blocked });
        }
        self.put_list_entry(ListKind::Trusted, source.network(), None, comment, false, &actor.name)?;
        let lifted = self.lift_ban(source, key.as_deref(), LiftCause::Admin, Some(actor))?;
        if let Some(ban) = &lifted {
            let detail = format!("{} ban lifted, trusted with comment {comment:?}", ban.reason.label());
            self.record_change(actor, AuditAction::BanLiftedAndTrusted, &source.to_string(), detail);
        }
        Ok(lifted)
    }

    /// Lifts the ban on `source` of that scope (`refused_login`, a login key: that login's
    /// IP+login refusal), counted and announced under `cause`. Blocking.
    fn lift_ban(
        &self,
        source: Source,
        refused_login: Option<&str>,
        cause: LiftCause,
        actor: Option<&Principal>,
    ) -> Result<Option<Arc<Ban>>, StoreError> {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let deleted = shared.store.delete_ban(source, refused_login, now);
        shared.metrics.store_result("delete_ban", &deleted);
        let deleted = deleted?;
        lock(&shared.unsaved_bans).remove(&(source, refused_login.map(str::to_string)));
        let removed = shared.bans.remove(source, refused_login);
        match (refused_login, &removed) {
            (Some(login), removed) => {
                // The guesses keep the login as Dovecot spelt it.
                let mut spellings: Vec<&str> =
                    removed.iter().flat_map(|b| b.cause.guesses.iter().map(|g| g.login.as_str())).collect();
                spellings.push(login);
                spellings.dedup();
                for spelling in spellings {
                    self.forgive_at(source, spelling, now);
                }
            }
            (None, _) => shared.failures.forget(source),
        }
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
        let lifted = removed.filter(|b| b.is_active(now));
        if lifted.is_some() || deleted {
            shared.metrics.bans_lifted.with_label_values(&[cause.label()]).inc();
            tracing::info!(source = %source, login = refused_login, cause = cause.label(), "ban lifted");
        }
        if let Some(ban) = &lifted {
            let by = actor.map(|principal| principal.name.as_str());
            shared.notifier.publish_durably(Notice::ban_lifted(ban, cause, now, by));
        }
        Ok(lifted)
    }

    /// Block-log events matching `filter`, newest first. Blocking.
    pub fn events(&self, filter: &EventFilter) -> Result<EventPage, StoreError> {
        // Whatever was refused before the query is in its answer, though the writer gathers
        // records for a moment before storing them.
        self.shared.journal.flush();
        let result = self.shared.store.events(filter);
        self.shared.metrics.store_result("read_events", &result);
        result
    }

    /// Ends bans and list entries whose time is up, in memory and in the store, and drops part
    /// of the failure and account histories no longer needed. Blocking.
    pub fn sweep_expired(&self) -> Result<usize, StoreError> {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let ended = shared.bans.take_expired(now);
        if !ended.is_empty() {
            shared.metrics.bans_lifted.with_label_values(&["expired"]).inc_by(ended.len() as u64);
            shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
            for ban in &ended {
                tracing::info!(source = %ban.source, login = ban.refused_login(), "ban expired");
            }
            // One write for the lot: a flood's bans tend to end together.
            let notices = ended.iter().map(|ban| Notice::ban_lifted(ban, LiftCause::Expired, now, None)).collect();
            shared.notifier.publish_all_durably(notices);
        }
        self.announce_ended_attacks(now);
        // Memory first: an unreachable store must not keep histories from expiring.
        shared.failures.sweep(now);
        shared.subnets.sweep(now);
        shared.tolerance.sweep(now);
        shared.accounts.sweep(now);
        shared.known_recorded.sweep(now);
        let deleted = shared.store.delete_expired_bans(now);
        shared.metrics.store_result("delete_expired_bans", &deleted);
        deleted?;
        Ok(ended.len() + self.sweep_expired_entries(now)?)
    }

    /// Announces the attack on `login` that just began (from `report`: never blocks).
    pub(super) fn announce_attack(&self, login: &str, sources: usize, now: Timestamp) {
        lock(&self.shared.attacks_announced).insert(login.into(), now);
        self.shared.notifier.publish(Notice::attack(NoticeKind::AttackStarted, login, sources, now, now));
    }

    /// Announces the end of every announced attack that is over: its account no longer has
    /// failures from enough sources within the window.
    fn announce_ended_attacks(&self, now: Timestamp) {
        if lock(&self.shared.attacks_announced).is_empty() {
            return;
        }
        let attacked: std::collections::HashSet<String> = self.accounts_under_attack().into_iter().collect();
        let ended: Vec<(Box<str>, Timestamp)> = {
            let mut announced = lock(&self.shared.attacks_announced);
            let over: Vec<Box<str>> = announced.keys().filter(|login| !attacked.contains(&***login)).cloned().collect();
            over.into_iter().filter_map(|login| announced.remove_entry(&login)).collect()
        };
        for (login, since) in ended {
            self.shared.notifier.publish(Notice::attack(NoticeKind::AttackEnded, &login, 0, since, now));
        }
    }

    /// Hands a notice about a stored change to the notifiers before the change is answered.
    /// Blocking.
    pub(super) fn notify_durably(&self, notice: Notice) {
        self.shared.notifier.publish_durably(notice);
    }

    /// Re-opens GeoIP databases replaced on disk; returns how many.
    pub fn refresh_geoip(&self) -> usize {
        self.shared.geoip.load().refresh()
    }

    /// Puts a newly loaded policy in force, with new GeoIP databases when their settings
    /// changed. Counters, bans, list entries and API rule sets carry over; settings only a
    /// restart can change keep their old values and are named in the result. Refused, with
    /// nothing changed, when a rule set would need GeoIP data the new policy does not provide.
    pub fn apply_policy(&self, new: Policy, geoip: Option<GeoIp>) -> Result<Vec<&'static str>, Vec<String>> {
        let old = self.shared.policy.load_full();
        let (new, kept) = new.keeping_restart_settings(&old)?;
        let entries = self.api_entries();
        let rule_sets = self.api_rule_sets();
        let problems = match &geoip {
            Some(fresh) => rules::check_sources(&new, &rule_sets, fresh),
            None => rules::check_sources(&new, &rule_sets, &self.shared.geoip.load()),
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        if let Some(fresh) = geoip {
            self.shared.geoip.store(Arc::new(fresh));
        }
        self.shared.failures.set_counting(detection::counting(&new));
        if new.autoban.grouping != old.autoban.grouping {
            self.regroup(old.autoban.grouping, new.autoban.grouping);
        }
        *lock(&self.shared.keep) = detection::keep(&new);
        self.shared.access.store(Arc::new(lists::build_access(&new, &entries, self.shared.clock.now())));
        self.shared.firewall.store(Arc::new(rules::build_firewall(&new, &rule_sets)));
        self.shared.owner_mail.set_settings(new.owner_mail.clone());
        self.shared.digest.set_settings(new.digest.clone());
        self.shared.policy.store(Arc::new(new));
        // After the policy: what the firewall drops depends on its lists and on server.mode.
        self.lists_changed();
        Ok(kept)
    }

    /// A reload changed how addresses are grouped into sources: failure counts move under
    /// the new grouping, and bans stay on the networks they were placed on (`BanIndex` finds
    /// them by address whatever the grouping), so no ban is freed by the change.
    fn regroup(&self, old: SourceGrouping, new: SourceGrouping) {
        let now = self.shared.clock.now();
        let kept = self.shared.failures.regroup(new, now);
        // Good logins of sources of another size say nothing of the new ones; the next logins
        // earn them again.
        self.shared.tolerance.forget_all(now);
        tracing::info!(
            ipv4_prefix = new.ipv4_prefix,
            ipv6_prefix = new.ipv6_prefix,
            was_ipv4_prefix = old.ipv4_prefix,
            was_ipv6_prefix = old.ipv6_prefix,
            failure_histories = kept,
            "source grouping changed: failure counts re-keyed, bans keep their networks"
        );
    }

    /// Brings gauges that are cheaper to read than to maintain up to date (before a scrape).
    pub fn refresh_gauges(&self) {
        let shared = &*self.shared;
        shared.metrics.accounts_under_attack.set(gauge_value(self.accounts_under_attack().len()));
        shared.metrics.tracked_sources.set(i64::try_from(shared.failures.tracked_sources()).unwrap_or(i64::MAX));
        shared.metrics.tolerated_sources.set(i64::try_from(shared.tolerance.tracked_sources()).unwrap_or(i64::MAX));
        shared.metrics.active_bans.set(gauge_value(shared.bans.len()));
        let access = shared.access.load();
        let now = shared.clock.now();
        for list in [ListKind::Trusted, ListKind::Blocked] {
            shared
                .metrics
                .list_entries
                .with_label_values(&[list.label()])
                .set(gauge_value(access.entries(list, now).len()));
        }
    }

    pub fn tracked_sources(&self) -> u64 {
        self.shared.failures.tracked_sources()
    }

    pub fn store_backend(&self) -> &'static str {
        self.shared.store.backend()
    }

    /// Whether the store answers now (cluster mode: Redis); `allow` never needs it.
    pub fn store_reachable(&self) -> bool {
        self.shared.store.is_up()
    }

    /// Stores the queued events and leaves the store compact before the process exits.
    /// Blocking.
    pub fn close(&self) -> Result<(), StoreError> {
        // The notifier first: its delivery threads may still note a failing endpoint in the
        // block log.
        self.shared.notifier.close();
        self.shared.journal.close();
        self.shared.store.close()
    }
}
