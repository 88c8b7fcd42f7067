//! The one Prometheus registry and every metric mailwarden exports, named by Prometheus
//! conventions: the `mailwarden_` prefix, base units, `_total` counters, and labels drawn only
//! from small fixed sets (never an address, a login or anything else a peer chooses).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request-duration buckets: tens of microseconds (an in-memory decision) up to a second.
const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];

/// The `reason` label of `allow`'s answers: the three allowed ones, then every refusal.
pub const DECISION_REASONS: &[&str] = &[
    "none",
    "trusted",
    "no_source",
    "ban",
    "login_refused",
    "blocked",
    "firewall_rule",
    "firewall_default",
    "stale_password",
    "account_under_attack",
    "store_unavailable",
];

/// The refusals (and the delay, `account_under_attack`) among `DECISION_REASONS`.
pub const REFUSAL_REASONS: &[&str] = DECISION_REASONS.split_at(3).1;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// What `registry` holds, for the README's table and its test.
    catalogue: Arc<Vec<MetricInfo>>,
    /// Admin-API requests refused before any route ran, by reason (`missing`, `wrong`,
    /// `rate_limited`).
    pub admin_auth_failures: IntCounterVec,
    /// Console sign-ins by result (`ok`, `wrong`, `rate_limited`, `metrics_scope`).
    pub console_sign_ins: IntCounterVec,
    /// Policy requests by command (`allow`, `report`, `unknown`) and HTTP status code.
    pub requests: Kept<IntCounterVec>,
    /// Time to answer a policy request, by command.
    pub request_duration: Kept<HistogramVec>,
    /// `allow` answers by verdict, reason and protocol.
    pub decisions: Kept<IntCounterVec>,
    /// What observe mode held back: the refusals and delays that were not enforced.
    pub observed_decisions: IntCounterVec,
    /// Reports by how they were treated (`success`, `failure`, `policy_reject`, ...).
    pub reports: Kept<IntCounterVec>,
    /// Bans placed, by reason.
    pub bans_created: IntCounterVec,
    /// Bans ended, by cause (`expired`, `admin`).
    pub bans_lifted: IntCounterVec,
    pub active_bans: IntGauge,
    /// Sources whose failure history is held in memory.
    pub tracked_sources: IntGauge,
    /// Failure histories dropped, by cause (`capacity`, `expired`).
    pub tracked_source_evictions: IntCounterVec,
    /// Durable-store operations by operation and result.
    pub store_operations: IntCounterVec,
    /// Entries in force on the admin lists, by list.
    pub list_entries: IntGaugeVec,
    /// Policy reloads by result.
    pub config_reloads: IntCounterVec,
    /// `nft -f` batches applied to the host firewall, by result.
    pub nftables_batches: IntCounterVec,
    pub geoip: GeoIpMetrics,
    /// Block-log events by reason and result (`stored`, `dropped`).
    pub events: IntCounterVec,
    /// Counted failures by kind: `new` (a distinct guess) or `repeated` (the same password again).
    pub failed_guesses: Kept<IntCounterVec>,
    /// Stale-password quarantines started.
    pub quarantines: IntCounterVec,
    /// Accounts that came under a distributed attack.
    pub account_attacks: IntCounterVec,
    pub accounts_under_attack: IntGauge,
    /// Successful logins recorded as known sources, by result (`stored`, `dropped`).
    pub known_sources: IntCounterVec,
    /// IP+login refusals placed (one login refused from an established source), by protocol.
    pub login_refusals: IntCounterVec,
    /// Distinct wrong guesses past `max_failures` that did not ban their source, thanks to the
    /// tolerance its good logins earned.
    pub tolerated_failures: prometheus::IntCounter,
    /// Sources whose good logins are remembered (they may earn tolerance).
    pub tolerated_sources: IntGauge,
    /// Bans lengthened for repeat offenders.
    pub ban_escalations: IntCounterVec,
    /// Self-service unblock attempts by result.
    pub self_unblocks: IntCounterVec,
    /// 1 while the durable store answers, 0 while it is unreachable (cluster mode: Redis).
    pub store_up: IntGauge,
    /// Counted logins sent to the cluster's shared count, by result (`sent`, `dropped`).
    pub cluster_shared_counts: IntCounterVec,
    /// Changes announced by other nodes and applied here, by kind.
    pub cluster_announcements: IntCounterVec,
    /// Notices on the internal stream by type and result (`published`, `dropped`).
    pub notifications: IntCounterVec,
    /// Mails to mailbox owners by kind and result.
    pub owner_mails: IntCounterVec,
    /// Admin digests by result.
    pub digests: IntCounterVec,
    pub webhooks: crate::notify::webhooks::WebhookMetrics,
}

/// The GeoIP databases' metrics, handed to `geoip::GeoIp`.
#[derive(Clone)]
pub struct GeoIpMetrics {
    /// Lookups by database (`country`, `asn`, `anonymous`) and result (`found`, `not_found`, `error`).
    pub lookups: IntCounterVec,
    /// The database's build time (its metadata's `build_epoch`), by database.
    pub build_timestamp: IntGaugeVec,
    /// Re-openings of a database file that changed on disk, by database and result (`success`, `failure`).
    pub reloads: IntCounterVec,
}

/// One metric as the README's table documents it: name, type, and each label with the values
/// it takes (empty for a label whose values are not a fixed set, such as an HTTP status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    /// counter, gauge or histogram.
    pub kind: &'static str,
    pub labels: Vec<(String, Vec<String>)>,
}

/// Registers metrics and notes each one's `MetricInfo`, so the table of what is exported is
/// built by the same calls that export it.
struct Registrar {
    registry: Registry,
    catalogue: Vec<MetricInfo>,
}

/// A label name and the values it takes (`&[]`: not a fixed set).
type Label<'a> = (&'a str, &'a [&'a str]);

impl Registrar {
    fn note(&mut self, name: &str, kind: &'static str, labels: &[Label<'_>]) {
        let labels =
            labels.iter().map(|(l, values)| (l.to_string(), values.iter().map(|v| v.to_string()).collect())).collect();
        self.catalogue.push(MetricInfo { name: name.to_string(), kind, labels });
    }

    fn names<'a>(labels: &[Label<'a>]) -> Vec<&'a str> {
        labels.iter().map(|(name, _)| *name).collect()
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[Label<'_>]) -> prometheus::Result<IntCounterVec> {
        let metric = IntCounterVec::new(Opts::new(name, help), &Self::names(labels))?;
        self.registry.register(Box::new(metric.clone()))?;
        self.note(name, "counter", labels);
        Ok(metric)
    }

    /// A counter whose labels all take fixed values, with every series kept (`Kept`).
    fn kept_counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[Label<'static>],
    ) -> prometheus::Result<Kept<IntCounterVec>> {
        let family = self.counter(name, help, labels)?;
        Ok(Kept::new(family, labels.iter().map(|(_, values)| *values).collect()))
    }

    /// A counter without labels.
    fn plain_counter(&mut self, name: &str, help: &str) -> prometheus::Result<prometheus::IntCounter> {
        let metric = prometheus::IntCounter::new(name, help)?;
        self.registry.register(Box::new(metric.clone()))?;
        self.note(name, "counter", &[]);
        Ok(metric)
    }

    fn gauge(&mut self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        let metric = IntGauge::new(name, help)?;
        self.registry.register(Box::new(metric.clone()))?;
        self.note(name, "gauge", &[]);
        Ok(metric)
    }

    fn gauge_vec(&mut self, name: &str, help: &str, labels: &[Label<'_>]) -> prometheus::Result<IntGaugeVec> {
        let metric = IntGaugeVec::new(Opts::new(name, help), &Self::names(labels))?;
        self.registry.register(Box::new(metric.clone()))?;
        self.note(name, "gauge", labels);
        Ok(metric)
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[Label<'_>],
    ) -> prometheus::Result<HistogramVec> {
        let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), &Self::names(labels))?;
        self.registry.register(Box::new(metric.clone()))?;
        self.note(name, "histogram", labels);
        Ok(metric)
    }
}

const COMMANDS: &[&str] = &["allow", "report", "unknown"];
const VERDICTS: &[&str] = &["allow", "delay", "reject"];
const REPORT_RESULTS: &[&str] = &[
    "success",
    "failure",
    "failure_unknown_account",
    "policy_reject",
    "failure_trusted",
    "failure_no_source",
    "failure_internal",
    "failure_expired",
    "failure_disabled",
];
const PROTOCOLS: &[&str] = &["imap", "pop3", "smtp", "submission", "sieve", "other"];
const STORED_OR_DROPPED: &[&str] = &["stored", "dropped"];
const SUCCESS_OR_FAILURE: &[&str] = &["success", "failure"];
const GEOIP_DATABASES: &[&str] = &["country", "asn", "anonymous"];
const ANNOUNCEMENTS: &[&str] = &[
    "ban_saved",
    "ban_deleted",
    "access_entries",
    "rule_set",
    "quarantine",
    "login_reset",
    "login_refusal_saved",
    "login_refusal_deleted",
    "tokens",
];

/// A labelled family whose busiest series are found once and kept: `with_label_values`
/// hashes the label values, takes the family's lock, probes its map and clones the series on
/// every call, and the policy path moves three or four series a request (docs/BENCHMARKS.md,
/// issue 21). A kept series is found by its values' positions in fixed lists; any other is
/// looked up as before. A series still appears in `/metrics` only once it has been moved.
/// Everything else of the family (`with_label_values`, `get_metric_with_label_values`) is
/// reached through `Deref`.
#[derive(Clone)]
pub struct Kept<F: KeptFamily> {
    family: F,
    /// For each label, in the family's order, the values whose series are kept.
    kept: Arc<[&'static [&'static str]]>,
    /// One slot per combination of kept values, in mixed radix over `kept`.
    series: Arc<[OnceLock<F::Series>]>,
}

/// A Prometheus family that `Kept` can hold (`IntCounterVec`, `HistogramVec`).
pub trait KeptFamily {
    type Series: Clone;
    fn series(&self, labels: &[&str]) -> Self::Series;
}

impl<T: MetricVecBuilder> KeptFamily for MetricVec<T>
where
    T::M: Clone,
{
    type Series = T::M;

    fn series(&self, labels: &[&str]) -> T::M {
        self.with_label_values(labels)
    }
}

impl<F: KeptFamily> Kept<F> {
    fn new(family: F, kept: Vec<&'static [&'static str]>) -> Kept<F> {
        let slots = kept.iter().map(|values| values.len()).product::<usize>();
        Kept { family, kept: kept.into(), series: (0..slots).map(|_| OnceLock::new()).collect() }
    }

    /// The series for `labels` (one value per label, as `with_label_values` takes them).
    pub fn of(&self, labels: &[&str]) -> Cow<'_, F::Series> {
        match self.slot(labels).and_then(|slot| self.series.get(slot)) {
            Some(kept) => Cow::Borrowed(kept.get_or_init(|| self.family.series(labels))),
            None => Cow::Owned(self.family.series(labels)),
        }
    }

    fn slot(&self, labels: &[&str]) -> Option<usize> {
        if labels.len() != self.kept.len() {
            return None;
        }
        labels.iter().zip(self.kept.iter()).try_fold(0, |slot, (value, values)| {
            Some(slot * values.len() + values.iter().position(|kept| kept == value)?)
        })
    }
}

impl<F: KeptFamily> std::ops::Deref for Kept<F> {
    type Target = F;

    fn deref(&self) -> &F {
        &self.family
    }
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let mut r = Registrar { registry: Registry::new(), catalogue: Vec::new() };
        let request_duration = r.histogram(
            "mailwarden_request_duration_seconds",
            "Time to answer a policy request.",
            DURATION_BUCKETS,
            &[("command", COMMANDS)],
        )?;
        let build_info = r.gauge_vec(
            "mailwarden_build_info",
            "Always 1; the version label says which build is running.",
            &[("version", &[])],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let event_reasons: Vec<&str> = crate::events::EventKind::ALL.iter().map(|kind| kind.label()).collect();
        let notice_types = crate::notify::NoticeKind::labels();

        let metrics = Metrics {
            requests: Kept::new(
                r.counter(
                    "mailwarden_requests_total",
                    "Policy requests by command and HTTP status code.",
                    &[("command", COMMANDS), ("code", &[])],
                )?,
                // Nearly every request is answered 200.
                vec![COMMANDS, &["200"]],
            ),
            request_duration: Kept::new(request_duration, vec![COMMANDS]),
            decisions: r.kept_counter(
                "mailwarden_decisions_total",
                "Answers to allow requests by verdict, reason and protocol.",
                &[("verdict", VERDICTS), ("reason", DECISION_REASONS), ("protocol", PROTOCOLS)],
            )?,
            observed_decisions: r.counter(
                "mailwarden_observed_decisions_total",
                "Refusals and delays observe mode held back (the login was allowed), by verdict, reason and protocol.",
                &[
                    ("verdict", &["delay", "reject"]),
                    ("reason", REFUSAL_REASONS),
                    ("protocol", PROTOCOLS),
                ],
            )?,
            reports: r.kept_counter(
                "mailwarden_reports_total",
                "Login reports by how they were counted.",
                &[("result", REPORT_RESULTS)],
            )?,
            bans_created: r.counter("mailwarden_bans_created_total", "Bans placed, by reason.", &[("reason", &["autoban", "long_window", "subnet"])])?,
            bans_lifted: r.counter(
                "mailwarden_bans_lifted_total",
                "Bans ended, by cause.",
                &[("cause", &["expired", "admin", "self_service", "other_node", "reset_login"])],
            )?,
            login_refusals: r.counter(
                "mailwarden_login_refusals_total",
                "One login refused from an established source after too many wrong passwords for it, by protocol.",
                &[("protocol", PROTOCOLS)],
            )?,
            tolerated_failures: r.plain_counter(
                "mailwarden_tolerated_failures_total",
                "Distinct wrong passwords past max_failures that did not ban their address, thanks to the tolerance its good logins earned.",
            )?,
            tolerated_sources: r.gauge(
                "mailwarden_tolerated_sources",
                "Addresses whose recent successful logins are remembered, which earn them tolerance.",
            )?,
            active_bans: r.gauge("mailwarden_active_bans", "Bans in force.")?,
            tracked_sources: r.gauge(
                "mailwarden_tracked_sources",
                "Sources whose failed-login history is held in memory.",
            )?,
            store_up: {
                let metric = r.gauge(
                    "mailwarden_store_up",
                    "1 while the durable store answers, 0 while it is unreachable (the node answers from memory).",
                )?;
                metric.set(1);
                metric
            },
            cluster_shared_counts: r.counter(
                "mailwarden_cluster_shared_counts_total",
                "Counted logins sent to the cluster-wide failure count, by result.",
                &[("result", &["sent", "dropped"])],
            )?,
            cluster_announcements: r.counter(
                "mailwarden_cluster_announcements_total",
                "Changes made on other nodes and applied on this one, by kind.",
                &[("change", ANNOUNCEMENTS)],
            )?,
            store_operations: r.counter(
                "mailwarden_store_operations_total",
                "Durable-store operations by operation and result.",
                &[
                    (
                        "operation",
                        &[
                            "load_bans",
                            "load_list_entries",
                            "load_firewall_rules",
                            "save_ban",
                            "delete_ban",
                            "read_forgiven",
                            "delete_expired_bans",
                            "save_list_entry",
                            "delete_list_entry",
                            "delete_expired_list_entries",
                            "save_firewall_rules",
                            "delete_firewall_rules",
                            "read_events",
                            "read_known_sources",
                            "load_known_sources",
                            "read_self_service_key",
                            "spend_challenge",
                            "read_self_unblocks",
                            "count_self_unblock",
                            "uncount_self_unblock",
                            "announce_login_reset",
                            "load_tokens",
                            "save_token",
                            "delete_token",
                            "touch_token",
                            "save_audit",
                            "read_audit",
                        ],
                    ),
                    ("result", &["ok", "error"]),
                ],
            )?,
            admin_auth_failures: r.counter(
                "mailwarden_admin_auth_failures_total",
                "Admin-API requests refused for their bearer token, by reason (missing, wrong, rate_limited: the address failed 10 times within a minute).",
                &[("reason", &["missing", "wrong", "rate_limited"])],
            )?,
            console_sign_ins: r.counter(
                "mailwarden_console_sign_ins_total",
                "Console sign-ins by result (ok, wrong: a token not in force, rate_limited: the address failed 10 times within a minute, metrics_scope: a metrics token, which cannot open the console).",
                &[("result", &["ok", "wrong", "rate_limited", "metrics_scope"])],
            )?,
            list_entries: r.gauge_vec(
                "mailwarden_list_entries",
                "Entries in force on the admin lists, by list.",
                &[("list", &["blocked", "trusted"])],
            )?,
            config_reloads: r.counter(
                "mailwarden_config_reloads_total",
                "Policy reloads by result (success, failure).",
                &[("result", SUCCESS_OR_FAILURE)],
            )?,
            nftables_batches: r.counter(
                "mailwarden_nftables_batches_total",
                "Batches applied to the host firewall's nftables sets, by result (success, failure).",
                &[("result", SUCCESS_OR_FAILURE)],
            )?,
            tracked_source_evictions: r.counter(
                "mailwarden_tracked_source_evictions_total",
                "Failure histories dropped from memory, by cause (capacity, expired). Never a ban.",
                &[("cause", &["capacity", "expired"])],
            )?,
            events: r.counter(
                "mailwarden_events_total",
                "Block-log events by reason and result (stored, dropped).",
                &[("reason", &event_reasons), ("result", STORED_OR_DROPPED)],
            )?,
            failed_guesses: r.kept_counter(
                "mailwarden_failed_guesses_total",
                "Counted failed logins by kind: new (a distinct wrong password) or repeated (the same one again).",
                &[("kind", &["new", "repeated"])],
            )?,
            quarantines: r.counter(
                "mailwarden_stale_password_quarantines_total",
                "Logins and passwords quarantined after failing repeatedly from one source.",
                &[("protocol", PROTOCOLS)],
            )?,
            account_attacks: r.counter(
                "mailwarden_account_attacks_total",
                "Accounts that came under a distributed attack.",
                &[("protocol", PROTOCOLS)],
            )?,
            accounts_under_attack: r
                .gauge("mailwarden_accounts_under_attack", "Accounts under a distributed attack now.")?,
            known_sources: r.counter(
                "mailwarden_known_sources_total",
                "Successful logins recorded as an account's known source, by result (stored, dropped).",
                &[("result", STORED_OR_DROPPED)],
            )?,
            ban_escalations: r.counter(
                "mailwarden_ban_escalations_total",
                "Bans lengthened because the source was banned again soon after its last ban.",
                &[("reason", &["repeat_offender"])],
            )?,
            self_unblocks: r.counter(
                "mailwarden_self_unblocks_total",
                "Self-service unblock attempts by result (unblocked, limit_reached, challenge_failed, not_banned, admin_block, subnet_ban, store_error, rate_limited).",
                &[(
                    "result",
                    &[
                        "unblocked",
                        "limit_reached",
                        "challenge_failed",
                        "not_banned",
                        "admin_block",
                        "subnet_ban",
                        "store_error",
                        "rate_limited",
                    ],
                )],
            )?,
            geoip: GeoIpMetrics {
                lookups: r.counter(
                    "mailwarden_geoip_lookups_total",
                    "GeoIP lookups by database and result.",
                    &[("database", GEOIP_DATABASES), ("result", &["found", "not_found", "error"])],
                )?,
                build_timestamp: r.gauge_vec(
                    "mailwarden_geoip_database_build_timestamp_seconds",
                    "When the GeoIP database in use was built (Unix time), by database.",
                    &[("database", GEOIP_DATABASES)],
                )?,
                reloads: r.counter(
                    "mailwarden_geoip_reloads_total",
                    "Re-openings of GeoIP database files replaced on disk, by database and result.",
                    &[("database", &["country", "asn", "anonymous", "asn_list", "network_list"]), ("result", SUCCESS_OR_FAILURE)],
                )?,
            },
            notifications: r.counter(
                "mailwarden_notifications_total",
                "Notices on the internal stream every notifier reads, by type and result (published, dropped: the queue was full).",
                &[("type", &notice_types), ("result", &["published", "dropped"])],
            )?,
            owner_mails: r.counter(
                "mailwarden_owner_mails_total",
                "Mails to mailbox owners by kind (stale_device, attack) and result (sent, failed, rate_limited: one was sent for that account and device lately, no_recipient: not an address or turned off, dropped: the queue was full).",
                &[
                    ("kind", &["stale_device", "attack"]),
                    ("result", &["sent", "failed", "rate_limited", "no_recipient", "dropped"]),
                ],
            )?,
            digests: r.counter(
                "mailwarden_digests_total",
                "Admin digests by result (sent: one per recipient, failed, quiet: the period reached no threshold).",
                &[("result", &["sent", "failed", "quiet"])],
            )?,
            webhooks: crate::notify::webhooks::WebhookMetrics {
                deliveries: r.counter(
                    "mailwarden_webhook_deliveries_total",
                    "Webhook delivery attempts by endpoint (its name in policy.toml) and result (delivered, failed: retried later, expired: dropped at the deadline, queue_full: dropped, never queued).",
                    &[("endpoint", &[]), ("result", &["delivered", "failed", "expired", "queue_full"])],
                )?,
                queued: r.gauge_vec(
                    "mailwarden_webhook_queued",
                    "Notices waiting in the outbox for delivery, by endpoint.",
                    &[("endpoint", &[])],
                )?,
            },
            catalogue: Arc::new(r.catalogue),
            registry: r.registry,
        };
        // Cluster series exist from the start, so dashboards show a flat zero rather than no data.
        for result in ["sent", "dropped"] {
            metrics.cluster_shared_counts.with_label_values(&[result]);
        }
        for change in ANNOUNCEMENTS {
            metrics.cluster_announcements.with_label_values(&[change]);
        }
        for reason in ["missing", "wrong", "rate_limited"] {
            metrics.admin_auth_failures.with_label_values(&[reason]);
        }
        for result in ["ok", "wrong", "rate_limited", "metrics_scope"] {
            metrics.console_sign_ins.with_label_values(&[result]);
        }
        for result in SUCCESS_OR_FAILURE {
            metrics.nftables_batches.with_label_values(&[result]);
        }
        Ok(metrics)
    }

    /// Every metric mailwarden registers itself (not the process collector's), with its
    /// labels and their values: what the README's table must say.
    pub fn catalogue(&self) -> &[MetricInfo] {
        &self.catalogue
    }

    /// Counts a store operation's result.
    pub fn store_result<T, E>(&self, operation: &str, result: &Result<T, E>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.store_operations.with_label_values(&[operation, outcome]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap_or_default()
    }

    #[test]
    fn kept_series_count_as_looked_up_ones_and_appear_only_once_moved() {
        let metrics = Metrics::new().expect("registers");
        assert!(!exposed(&metrics).contains(r#"mailwarden_requests_total{code="200",command="allow"}"#));
        // A kept series (allow, 200), one outside the kept values (a 401), a value in no list.
        for _ in 0..3 {
            metrics.requests.of(&["allow", "200"]).inc();
        }
        metrics.requests.of(&["allow", "401"]).inc();
        metrics.requests.of(&["nonsense", "200"]).inc();
        metrics.decisions.of(&["reject", "ban", "pop3"]).inc();
        let text = exposed(&metrics);
        assert!(text.contains(r#"mailwarden_requests_total{code="200",command="allow"} 3"#), "{text}");
        assert!(text.contains(r#"mailwarden_requests_total{code="401",command="allow"} 1"#), "{text}");
        assert!(text.contains(r#"mailwarden_requests_total{code="200",command="nonsense"} 1"#), "{text}");
        assert!(text.contains(r#"mailwarden_decisions_total{protocol="pop3",reason="ban",verdict="reject"} 1"#));
        assert!(!text.contains(r#"command="report""#), "an unused series stays absent");
        // The kept handle and the family's own lookup are the same series.
        assert_eq!(metrics.decisions.with_label_values(&["reject", "ban", "pop3"]).get(), 1);
        assert_eq!(metrics.requests.with_label_values(&["allow", "200"]).get(), 3);
    }
}
