//! The one Prometheus registry and every metric mailwarden exports, named by Prometheus
//! conventions: the `mailwarden_` prefix, base units, `_total` counters, and labels drawn only
//! from small fixed sets (never an address, a login or anything else a peer chooses).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request-duration buckets: tens of microseconds (an in-memory decision) up to a second.
const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Policy requests by command (`allow`, `report`, `unknown`) and HTTP status code.
    pub requests: IntCounterVec,
    /// Time to answer a policy request, by command.
    pub request_duration: HistogramVec,
    /// `allow` answers by verdict, reason and protocol.
    pub decisions: IntCounterVec,
    /// Reports by how they were treated (`success`, `failure`, `policy_reject`, ...).
    pub reports: IntCounterVec,
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
    pub geoip: GeoIpMetrics,
    /// Block-log events by reason and result (`stored`, `dropped`).
    pub events: IntCounterVec,
    /// Counted failures by kind: `new` (a distinct guess) or `repeated` (the same password again).
    pub failed_guesses: IntCounterVec,
    /// Stale-password quarantines started.
    pub quarantines: IntCounterVec,
    /// Accounts that came under a distributed attack.
    pub account_attacks: IntCounterVec,
    pub accounts_under_attack: IntGauge,
    /// Successful logins recorded as known sources, by result (`stored`, `dropped`).
    pub known_sources: IntCounterVec,
    /// IP+login refusals placed (one login refused from an established source), by protocol.
    pub login_refusals: IntCounterVec,
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

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let metric = IntGauge::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new("mailwarden_request_duration_seconds", "Time to answer a policy request.")
                .buckets(DURATION_BUCKETS.to_vec()),
            &["command"],
        )?;
        registry.register(Box::new(request_duration.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("mailwarden_build_info", "Always 1; the version label says which build is running."),
            &["version"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

        let metrics = Metrics {
            requests: counter(
                &registry,
                "mailwarden_requests_total",
                "Policy requests by command and HTTP status code.",
                &["command", "code"],
            )?,
            request_duration,
            decisions: counter(
                &registry,
                "mailwarden_decisions_total",
                "Answers to allow requests by verdict, reason and protocol.",
                &["verdict", "reason", "protocol"],
            )?,
            reports: counter(
                &registry,
                "mailwarden_reports_total",
                "Login reports by how they were counted.",
                &["result"],
            )?,
            bans_created: counter(&registry, "mailwarden_bans_created_total", "Bans placed, by reason.", &["reason"])?,
            bans_lifted: counter(&registry, "mailwarden_bans_lifted_total", "Bans ended, by cause.", &["cause"])?,
            login_refusals: counter(
                &registry,
                "mailwarden_login_refusals_total",
                "One login refused from an established source after too many wrong passwords for it, by protocol.",
                &["protocol"],
            )?,
            active_bans: gauge(&registry, "mailwarden_active_bans", "Bans in force.")?,
            tracked_sources: gauge(
                &registry,
                "mailwarden_tracked_sources",
                "Sources whose failed-login history is held in memory.",
            )?,
            store_up: {
                let metric = gauge(
                    &registry,
                    "mailwarden_store_up",
                    "1 while the durable store answers, 0 while it is unreachable (the node answers from memory).",
                )?;
                metric.set(1);
                metric
            },
            cluster_shared_counts: counter(
                &registry,
                "mailwarden_cluster_shared_counts_total",
                "Counted logins sent to the cluster-wide failure count, by result.",
                &["result"],
            )?,
            cluster_announcements: counter(
                &registry,
                "mailwarden_cluster_announcements_total",
                "Changes made on other nodes and applied on this one, by kind.",
                &["change"],
            )?,
            store_operations: counter(
                &registry,
                "mailwarden_store_operations_total",
                "Durable-store operations by operation and result.",
                &["operation", "result"],
            )?,
            list_entries: {
                let metric = IntGaugeVec::new(
                    Opts::new("mailwarden_list_entries", "Entries in force on the admin lists, by list."),
                    &["list"],
                )?;
                registry.register(Box::new(metric.clone()))?;
                metric
            },
            config_reloads: counter(
                &registry,
                "mailwarden_config_reloads_total",
                "Policy reloads by result (success, failure).",
                &["result"],
            )?,
            tracked_source_evictions: counter(
                &registry,
                "mailwarden_tracked_source_evictions_total",
                "Failure histories dropped from memory, by cause (capacity, expired). Never a ban.",
                &["cause"],
            )?,
            events: counter(
                &registry,
                "mailwarden_events_total",
                "Block-log events by reason and result (stored, dropped).",
                &["reason", "result"],
            )?,
            failed_guesses: counter(
                &registry,
                "mailwarden_failed_guesses_total",
                "Counted failed logins by kind: new (a distinct wrong password) or repeated (the same one again).",
                &["kind"],
            )?,
            quarantines: counter(
                &registry,
                "mailwarden_stale_password_quarantines_total",
                "Logins and passwords quarantined after failing repeatedly from one source.",
                &["protocol"],
            )?,
            account_attacks: counter(
                &registry,
                "mailwarden_account_attacks_total",
                "Accounts that came under a distributed attack.",
                &["protocol"],
            )?,
            accounts_under_attack: gauge(
                &registry,
                "mailwarden_accounts_under_attack",
                "Accounts under a distributed attack now.",
            )?,
            known_sources: counter(
                &registry,
                "mailwarden_known_sources_total",
                "Successful logins recorded as an account's known source, by result (stored, dropped).",
                &["result"],
            )?,
            ban_escalations: counter(
                &registry,
                "mailwarden_ban_escalations_total",
                "Bans lengthened because the source was banned again soon after its last ban.",
                &["reason"],
            )?,
            self_unblocks: counter(
                &registry,
                "mailwarden_self_unblocks_total",
                "Self-service unblock attempts by result (unblocked, limit_reached, challenge_failed, not_banned, admin_block).",
                &["result"],
            )?,
            geoip: GeoIpMetrics {
                lookups: counter(
                    &registry,
                    "mailwarden_geoip_lookups_total",
                    "GeoIP lookups by database and result.",
                    &["database", "result"],
                )?,
                build_timestamp: {
                    let metric = IntGaugeVec::new(
                        Opts::new(
                            "mailwarden_geoip_database_build_timestamp_seconds",
                            "When the GeoIP database in use was built (Unix time), by database.",
                        ),
                        &["database"],
                    )?;
                    registry.register(Box::new(metric.clone()))?;
                    metric
                },
                reloads: counter(
                    &registry,
                    "mailwarden_geoip_reloads_total",
                    "Re-openings of GeoIP database files replaced on disk, by database and result.",
                    &["database", "result"],
                )?,
            },
            registry,
        };
        // Cluster series exist from the start, so dashboards show a flat zero rather than no data.
        for result in ["sent", "dropped"] {
            metrics.cluster_shared_counts.with_label_values(&[result]);
        }
        for change in ["ban_saved", "ban_deleted", "access_entries", "rule_set", "quarantine"] {
            metrics.cluster_announcements.with_label_values(&[change]);
        }
        Ok(metrics)
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
