//! mailwarden's metrics as an admin sees them. A real Prometheus scrapes the real binary while
//! the test drives what an attack and its handling produce (logins, distinct and repeated
//! wrong passwords, bans lifted and escalated, a stale-password quarantine, an attack on one
//! account, firewall refusals, list entries, reloads good and bad, GeoIP lookups and file
//! replacements); then every query of the Grafana dashboard must return data through
//! Prometheus's API, `promtool check metrics` must accept the exposition, and the README must
//! document every metric family exported. The README's table is also compared with the
//! registry's catalogue (types, labels, their values), and every label value exported must
//! be one the registry declares. That keeps the dashboard and the docs honest as the
//! metrics change.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::geoip::{
    FIXTURE_BUILD_EPOCH, FIXTURE_COUNTRIES, FixturePaths, write_country_db, write_file, write_fixtures,
};
use support::mailwarden::{Mailwarden, login_body};
use support::prometheus::{
    Prometheus, ScrapeTarget, promtool_check_config, promtool_check_metrics, require_prometheus,
};

const JOB: &str = "mailwarden";
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The filter every dashboard query carries, so one dashboard serves several instances.
const INSTANCE_FILTER: &str = r#"job=~"$job", instance=~"$instance""#;

/// The values Grafana's built-in variables take in the test. `rate()` over 30 s of 1 s scrapes
/// spans enough samples; Grafana itself makes `$__rate_interval` at least four scrape
/// intervals.
const GRAFANA_BUILT_INS: &[(&str, &str)] = &[("__rate_interval", "30s"), ("__range", "1m"), ("__interval", "5s")];

/// Alice's firewall blocks non-residential networks and allows France and Belgium; the
/// domain's blocks China for everyone else. The window is short so that the failure
/// histories of sources that stop failing expire, and are counted, while the test runs; a
/// repeat offender's ban doubles; four addresses failing on one account is an attack.
const POLICY: &str = r#"
[autoban]
window = "2s"
escalation_factor = 2.0

[stale_passwords]
after = 3

[account_protection]
sources = 4
action = "delay"
delay = "2s"

[mailboxes."alice@example.com"]
default = "block"
rules = [
  { action = "allow", network = "198.51.100.0/24" },
  { action = "block", non_residential = true },
  { action = "allow", country = ["FR", "BE"] },
]

[mailboxes."@example.com"]
default = "allow"
rules = [ { action = "block", country = ["CN"] } ]
"#;

fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_repository_file(relative: &str) -> String {
    let path = repository_file(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read_repository_file("grafana/mailwarden.json"))
        .unwrap_or_else(|e| panic!("grafana/mailwarden.json is not JSON: {e}"))
}

/// The README's "## Metrics" section, up to the next `## ` heading.
fn readme_metrics_section() -> String {
    let readme = read_repository_file("README.md");
    let start = readme.find("\n## Metrics\n").expect("README.md has a ## Metrics section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    rest[..end].to_owned()
}

fn geoip_section(paths: &FixturePaths) -> String {
    format!(
        "[geoip]\ncountry_db = {:?}\nasn_db = {:?}\nanonymous_db = {:?}\nnon_residential_asns_file = {:?}\nnon_residential_networks_file = {:?}\ncheck_every = \"1s\"\n",
        paths.country, paths.asn, paths.anonymous, paths.asn_list, paths.network_list
    )
}

fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `allow` for `login` from `remote` over `protocol`; returns Dovecot's status (0: allow,
/// -1: reject, more: a delay in seconds).
fn allow(mw: &Mailwarden, login: &str, remote: &str, protocol: &str) -> i64 {
    allow_with_password(mw, login, remote, protocol, "0f96")
}

/// `allow` carrying the hash Dovecot computed of the password tried.
fn allow_with_password(mw: &Mailwarden, login: &str, remote: &str, protocol: &str, pwhash: &str) -> i64 {
    let body = format!(
        r#"{{"login":"{login}","pwhash":"{pwhash}","remote":"{remote}","protocol":"{protocol}","device_id":"","session_id":"s","tls":true}}"#
    );
    let (status, answer) = mw.policy("allow", &body);
    assert_eq!(status, 200, "{answer}");
    let reply: Value = serde_json::from_str(&answer).expect("allow answers JSON");
    reply["status"].as_i64().expect("status is an integer")
}

/// A `report` of a login's outcome; `policy_reject` marks a login mailwarden itself refused.
/// Every report carries another password hash: a distinct guess, as an attacker's are.
fn report(mw: &Mailwarden, login: &str, remote: &str, success: bool, policy_reject: bool) {
    static GUESSES: AtomicU32 = AtomicU32::new(0);
    let pwhash = format!("{:04x}", GUESSES.fetch_add(1, Ordering::Relaxed));
    report_with_password(mw, login, remote, success, policy_reject, &pwhash);
}

fn report_with_password(mw: &Mailwarden, login: &str, remote: &str, success: bool, policy_reject: bool, pwhash: &str) {
    let body = format!(
        r#"{{"login":"{login}","pwhash":"{pwhash}","remote":"{remote}","protocol":"imap","session_id":"s","success":{success},"policy_reject":{policy_reject},"tls":true}}"#
    );
    let (status, answer) = mw.policy("report", &body);
    assert_eq!(status, 200, "{answer}");
}

/// `n` distinct wrong passwords for `login` from `remote`.
fn fail_n(mw: &Mailwarden, login: &str, remote: &str, n: usize) {
    for _ in 0..n {
        report(mw, login, remote, false, false);
    }
}

fn metrics_text(mw: &Mailwarden) -> String {
    let (status, text) = mw.admin("GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    text
}

/// Everything the dashboard shows, happening once: the traffic of an attack and of the admin
/// handling it.
fn drive_an_attack_and_its_handling(mw: &Mailwarden, paths: &FixturePaths, policy: &str) {
    // Good logins, and one from a network the admin trusts.
    for remote in ["203.0.113.7", "203.0.113.8"] {
        assert_eq!(allow(mw, "carol@example.org", remote, "imap"), 0);
        report(mw, "carol@example.org", remote, true, false);
    }
    assert_eq!(mw.admin_post("/api/v1/trusted", Some(r#"{"network":"198.51.100.77"}"#)).0, 201);
    assert_eq!(allow(mw, "carol@example.org", "198.51.100.77", "pop3"), 0);
    // A blocked entry on trial (observe mode): its address logs in, recorded as "would refuse".
    let observed = r#"{"network":"192.0.2.200","mode":"observe"}"#;
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(observed)).0, 201);
    assert_eq!(allow(mw, "carol@example.org", "192.0.2.200", "imap"), 0);

    // Guessing: a source banned after five distinct wrong passwords, unbanned by the admin,
    // and banned again at once, for longer; sources that fail once (each on another account)
    // and go quiet; a failure from the trusted network, which never counts.
    fail_n(mw, "carol@example.org", "203.0.113.50", 5);
    assert_eq!(allow(mw, "carol@example.org", "203.0.113.50", "imap"), -1);
    assert_eq!(mw.admin("DELETE", "/api/v1/bans/203.0.113.50").0, 200);
    fail_n(mw, "carol@example.org", "203.0.113.50", 5);
    assert_eq!(allow(mw, "carol@example.org", "203.0.113.50", "pop3"), -1);
    for (n, remote) in ["203.0.113.71", "203.0.113.72", "203.0.113.73"].into_iter().enumerate() {
        fail_n(mw, &format!("user{n}@example.org"), remote, 1);
    }
    report(mw, "carol@example.org", "198.51.100.77", false, false);

    // On an address carol logs in from, eve's account guessed five times: eve alone is
    // refused from there (an IP+login refusal), carol still logs in.
    fail_n(mw, "eve@example.org", "203.0.113.7", 5);
    assert_eq!(allow(mw, "eve@example.org", "203.0.113.7", "imap"), -1);
    assert_eq!(allow(mw, "carol@example.org", "203.0.113.7", "imap"), 0);

    // A phone with an old password: the same wrong password three times from one place is
    // quarantined, and refused from there.
    for _ in 0..3 {
        report_with_password(mw, "frank@example.org", "203.0.113.90", false, false, "57a1e");
    }
    assert_eq!(allow_with_password(mw, "frank@example.org", "203.0.113.90", "imap", "57a1e"), -1);

    // A distributed attack on one account: four addresses fail, and a fifth, new to the
    // account, is delayed.
    for remote in ["203.0.113.81", "203.0.113.82", "203.0.113.83", "203.0.113.84"] {
        fail_n(mw, "dave@example.org", remote, 1);
    }
    assert_eq!(allow(mw, "dave@example.org", "203.0.113.99", "imap"), 2);

    // The email firewall: a hosting provider (rule no. 2, which needs the ASN and anonymous
    // databases), China against alice's default and the domain's rule, an unknown address.
    assert_eq!(allow(mw, "alice@example.com", "192.0.2.7", "imap"), -1);
    assert_eq!(allow(mw, "alice@example.com", "2001:db8:c::1", "pop3"), -1);
    assert_eq!(allow(mw, "alice@example.com", "10.1.2.3", "imap"), -1);
    assert_eq!(allow(mw, "alice@example.com", "203.0.113.9", "imap"), 0);
    assert_eq!(allow(mw, "bob@example.com", "198.51.100.7", "imap"), -1);
    report(mw, "alice@example.com", "192.0.2.7", false, true);

    // The admin blocks a network.
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(r#"{"network":"10.66.0.0/16","comment":"attack"}"#)).0, 201);
    assert_eq!(allow(mw, "carol@example.org", "10.66.1.1", "submission"), -1);

    // A Dovecot with the wrong API key.
    let (status, _) = mw.policy_with_key(
        "allow",
        &login_body("203.0.113.7", "carol@example.org", "0f96"),
        Some("not-the-api-key-0000"),
    );
    assert_eq!(status, 401);

    // A reload, a broken policy file refused, and the good file put back.
    assert_eq!(mw.admin_post("/api/v1/reload", None).0, 200);
    mw.write_config("", "[autoban]\nwindow = \"soon\"\n");
    assert_eq!(mw.admin_post("/api/v1/reload", None).0, 422);
    mw.write_config("", policy);

    // geoipupdate replaces the country database; a broken AS list is refused.
    write_country_db(&paths.country, FIXTURE_COUNTRIES, FIXTURE_BUILD_EPOCH + 86_400);
    write_file(&paths.asn_list, "AS64510\nnot-an-as-number\n");
    let expected = [
        "mailwarden_geoip_reloads_total{database=\"country\",result=\"success\"}",
        "mailwarden_geoip_reloads_total{database=\"asn_list\",result=\"failure\"}",
        // After a whole window without failures; reading /metrics runs the expiry.
        "mailwarden_tracked_source_evictions_total{cause=\"expired\"}",
        // The journal records successful logins' sources in batches.
        "mailwarden_known_sources_total{result=\"stored\"}",
    ];
    eventually(
        Duration::from_secs(15),
        "GeoIP files are re-read, idle failure histories expire and known sources are stored",
        || {
            let text = metrics_text(mw);
            expected.iter().all(|series| text.contains(series))
        },
    );
}

/// Replaces Grafana variables (`$name` and `${name}`) in a query: the built-ins with
/// [`GRAFANA_BUILT_INS`], the dashboard's own with their "All" value. An unknown variable
/// is an error, so a new one cannot slip through untested.
fn substitute_variables(expression: &str, dashboard_variables: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(expression.len());
    let mut rest = expression;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unclosed ${{ in {expression}"))?;
            (&braced[..end], end + 2)
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = GRAFANA_BUILT_INS
            .iter()
            .find(|(built_in, _)| *built_in == name)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| {
                dashboard_variables.iter().find(|(variable, _)| variable == name).map(|(_, value)| value.clone())
            })
            .ok_or_else(|| format!("unknown variable ${name}"))?;
        out.push_str(&value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every panel, including those nested in collapsed rows.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels is a list") {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    panels
}

/// The panels that show data (not rows), with their title.
fn data_panels(dashboard: &Value) -> Vec<(String, &Value)> {
    all_panels(dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .map(|panel| (panel["title"].as_str().unwrap_or("(untitled)").to_owned(), panel))
        .collect()
}

/// The dashboard's query variables and the value their "All" option sends.
fn dashboard_variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let name = variable["name"].as_str().expect("a variable name").to_owned();
            let all =
                variable["allValue"].as_str().unwrap_or_else(|| panic!("variable {name} has no allValue")).to_owned();
            (name, all)
        })
        .collect()
}

/// Evaluates every query of every panel and every variable query; returns what failed.
fn dashboard_problems(prometheus: &Prometheus, dashboard: &Value) -> Vec<String> {
    let variables = dashboard_variables(dashboard);
    let mut problems = Vec::new();
    for variable in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default();
        let query = variable["query"].as_str().or_else(|| variable["query"]["query"].as_str()).unwrap_or_default();
        let Some(arguments) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) else {
            problems.push(format!("variable {name}: not label_values(...): {query}"));
            continue;
        };
        let Some((selector, label)) = arguments.rsplit_once(',') else {
            problems.push(format!("variable {name}: label_values needs a selector: {query}"));
            continue;
        };
        let outcome = substitute_variables(selector.trim(), &variables)
            .and_then(|selector| prometheus.label_values(label.trim(), &selector));
        match outcome {
            Ok(values) if values.is_empty() => problems.push(format!("variable {name}: {query} has no values")),
            Ok(_) => {}
            Err(e) => problems.push(format!("variable {name}: {query}: {e}")),
        }
    }
    for (title, panel) in data_panels(dashboard) {
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        for target in targets {
            let reference = target["refId"].as_str().unwrap_or("?");
            let Some(expression) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                problems.push(format!("panel {title:?} query {reference} has no expr"));
                continue;
            };
            let place = format!("panel {title:?} query {reference} ({expression})");
            let data = substitute_variables(expression, &variables).and_then(|query| prometheus.query(&query));
            match data {
                Err(e) => problems.push(format!("{place}: {e}")),
                Ok(data) => {
                    let result = data["result"].as_array().cloned().unwrap_or_default();
                    if result.is_empty() {
                        problems.push(format!("{place}: no series"));
                    } else if result.iter().any(|series| series["value"][1] == "NaN") {
                        problems.push(format!("{place}: NaN in {}", Value::Array(result)));
                    }
                }
            }
        }
    }
    problems
}

/// A row of the README's metric table: type, and each label with the values it lists (`None`
/// when the parentheses describe rather than list, as for `code`, or are absent).
struct ReadmeRow {
    kind: String,
    labels: Vec<(String, Option<Vec<String>>)>,
}

/// The README's metric table by metric name.
fn readme_metric_rows() -> std::collections::BTreeMap<String, ReadmeRow> {
    let mut rows = std::collections::BTreeMap::new();
    for line in readme_metrics_section().lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [name, kind, labels, ..] = cells.as_slice() else { panic!("a short row: {line}") };
        // Commas inside parentheses separate values, outside them labels.
        let (mut parts, mut depth, mut part) = (Vec::new(), 0, String::new());
        for c in labels.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut part));
                    continue;
                }
                _ => {}
            }
            part.push(c);
        }
        parts.push(part);
        let labels = parts
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let label = p.split('`').nth(1).unwrap_or_else(|| panic!("a label without backticks: {line}"));
                let listed = p.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map(|(inside, _)| inside);
                let plain = |v: &str| {
                    !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                };
                let values = listed
                    .map(|inside| inside.split(", ").map(str::to_string).collect::<Vec<_>>())
                    .filter(|values| values.iter().all(|v| plain(v)));
                (label.to_string(), values)
            })
            .collect();
        rows.insert(name.trim_matches('`').to_string(), ReadmeRow { kind: kind.to_string(), labels });
    }
    rows
}

#[test]
fn the_readme_metric_table_lists_every_metric_with_its_type_labels_and_their_values() {
    let metrics = mailwarden::metrics::Metrics::new().expect("the registry");
    let mut rows = readme_metric_rows();
    let mut problems = Vec::new();
    for metric in metrics.catalogue() {
        let Some(row) = rows.remove(&metric.name) else {
            problems.push(format!("{}: no row", metric.name));
            continue;
        };
        if row.kind != metric.kind {
            problems.push(format!("{}: the README says {}, the code {}", metric.name, row.kind, metric.kind));
        }
        let documented: Vec<&str> = row.labels.iter().map(|(name, _)| name.as_str()).collect();
        let exported: Vec<&str> = metric.labels.iter().map(|(name, _)| name.as_str()).collect();
        if documented != exported {
            problems.push(format!("{}: the README lists labels {documented:?}, the code {exported:?}", metric.name));
            continue;
        }
        for ((label, listed), (_, values)) in row.labels.iter().zip(&metric.labels) {
            if values.is_empty() {
                continue;
            }
            let listed: BTreeSet<&str> = listed.iter().flatten().map(String::as_str).collect();
            let values: BTreeSet<&str> = values.iter().map(String::as_str).collect();
            if listed != values {
                problems.push(format!(
                    "{} {label}: the README lists ({}), the code has ({})",
                    metric.name,
                    listed.into_iter().collect::<Vec<_>>().join(", "),
                    values.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    problems.extend(
        rows.keys().filter(|name| name.starts_with("mailwarden_")).map(|name| format!("{name}: a row for no metric")),
    );
    assert!(
        problems.is_empty(),
        "README.md's ## Metrics table is out of step with src/metrics.rs:\n{}",
        problems.join("\n")
    );
}

/// Label values in `exposition` that the registry does not declare for their metric, as
/// `metric label="value"`.
fn undeclared_label_values(exposition: &str, metrics: &mailwarden::metrics::Metrics) -> Vec<String> {
    let mut found = BTreeSet::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, labels)) = line.split_once('{') else { continue };
        let Some(metric) = metrics.catalogue().iter().find(|m| {
            series == m.name
                || (m.kind == "histogram"
                    && ["_bucket", "_sum", "_count"].iter().any(|s| series == format!("{}{s}", m.name)))
        }) else {
            continue;
        };
        let labels = labels.rsplit_once('}').map_or(labels, |(inside, _)| inside);
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let Some((label, value)) = pair.split_once("=\"") else { continue };
            let value = value.trim_end_matches('"');
            let declared = metric.labels.iter().find(|(name, _)| name == label).map(|(_, values)| values);
            if declared.is_some_and(|values| !values.is_empty() && !values.iter().any(|v| v == value)) {
                found.insert(format!("{} {label}=\"{value}\"", metric.name));
            }
        }
    }
    found.into_iter().collect()
}

/// `# TYPE <name> <type>` lines of an exposition: (name, type).
fn metric_families(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_after_an_attack() {
    if !require_prometheus() {
        return;
    }
    let started = Instant::now();
    let mut mw = Mailwarden::configure("");
    // Generated beside the state, never downloaded; see tests/support/geoip.rs for what
    // each address maps to.
    let geoip_dir = mw.dir.path().join("geoip");
    fs::create_dir_all(&geoip_dir).expect("create the GeoIP folder");
    let paths = write_fixtures(&geoip_dir);
    // A webhook endpoint, so the notification panels have deliveries to show.
    let receiver = support::webhook_receiver::Receiver::start(0, "observability-secret-0123", 0);
    let webhook = format!("[webhooks.siem]\nurl = \"{}\"\nsecret = \"observability-secret-0123\"\n", receiver.url());
    let policy = format!("{}\n{POLICY}\n{webhook}", geoip_section(&paths));
    let public_port = support::mailwarden::free_port();
    mw.write_config(&format!("public_listen = \"127.0.0.1:{public_port}\"\n"), &policy);
    mw.restart();

    let prometheus = Prometheus::start(&ScrapeTarget {
        job: JOB,
        address: mw.admin_addr,
        metrics_path: "/metrics",
        bearer_token: &mw.admin_token,
        interval: SCRAPE_INTERVAL,
    });
    prometheus.wait_until_target_up(JOB, Duration::from_secs(15));

    drive_an_attack_and_its_handling(&mw, &paths, &policy);
    // A visitor who is not banned tries the self-service page's unblock.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let attempt = r#"{"algorithm":"SHA-256","challenge":"00","number":1,"salt":"00","signature":"00"}"#;
    let answered = agent
        .post(format!("http://127.0.0.1:{public_port}/unblock"))
        .header("Content-Type", "application/json")
        .send(attempt);
    assert_eq!(answered.expect("the public page answers").status().as_u16(), 400);

    // Rates need two samples of every series inside their window: wait for three more
    // scrapes, each of which holds every series the traffic created, keeping a trickle of
    // logins going meanwhile so the latency percentiles have requests to describe.
    let scrapes = format!("count_over_time(up{{job=\"{JOB}\"}}[5m])");
    let scrapes_after_traffic = prometheus.query_number(&scrapes).unwrap_or(0.0) + 3.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus.query_number(&scrapes).unwrap_or(0.0) < scrapes_after_traffic {
        assert!(Instant::now() < deadline, "Prometheus did not scrape three more times:\n{}", prometheus.log());
        allow(&mw, "carol@example.org", "203.0.113.7", "imap");
        report(&mw, "carol@example.org", "203.0.113.7", true, false);
        std::thread::sleep(Duration::from_millis(200));
    }

    let exposition = metrics_text(&mw);
    let lint = promtool_check_metrics(&exposition);
    assert!(lint.success && lint.output.trim().is_empty(), "promtool check metrics complains:\n{}", lint.output);

    let undeclared = undeclared_label_values(&exposition, &mailwarden::metrics::Metrics::new().expect("the registry"));
    assert!(
        undeclared.is_empty(),
        "label values src/metrics.rs does not declare (nor the README list):\n{}",
        undeclared.join("\n")
    );

    let readme = readme_metrics_section();
    let dashboard = dashboard();
    let dashboard_text = dashboard.to_string();
    let mut undocumented = Vec::new();
    let mut not_on_the_dashboard = Vec::new();
    for (name, kind) in metric_families(&exposition) {
        if !readme.contains(&format!("| `{name}` | {kind} |")) {
            undocumented.push(format!("{name} ({kind})"));
        }
        if name.starts_with("mailwarden_") && !dashboard_text.contains(&name) {
            not_on_the_dashboard.push(name);
        }
    }
    assert!(
        undocumented.is_empty(),
        "README.md's ## Metrics table lacks a row \"| `name` | type |\" for: {}",
        undocumented.join(", ")
    );
    assert!(
        not_on_the_dashboard.is_empty(),
        "no panel of grafana/mailwarden.json shows: {}",
        not_on_the_dashboard.join(", ")
    );

    let problems = dashboard_problems(&prometheus, &dashboard);
    assert!(
        problems.is_empty(),
        "dashboard queries that show nothing:\n{}\n--- prometheus log ---\n{}",
        problems.join("\n"),
        prometheus.log()
    );
    eprintln!(
        "observability: {} panels checked against Prometheus in {:.1?}",
        data_panels(&dashboard).len(),
        started.elapsed()
    );
}

#[test]
fn the_dashboard_is_importable_and_names_no_fixed_datasource() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs for import");
    assert!(
        inputs.iter().any(|input| input["name"] == "DS_PROMETHEUS"
            && input["type"] == "datasource"
            && input["pluginId"] == "prometheus"),
        "__inputs must ask for a Prometheus datasource as DS_PROMETHEUS: {inputs:?}"
    );
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    let datasource =
        variables.iter().find(|variable| variable["name"] == "datasource").expect("a variable named datasource");
    assert_eq!(
        (datasource["type"].as_str(), datasource["query"].as_str(), datasource["current"]["value"].as_str()),
        (Some("datasource"), Some("prometheus"), Some("${DS_PROMETHEUS}")),
        "the datasource variable lists Prometheus datasources and starts at the imported one"
    );

    let expected = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("panel {title:?} has no id"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "panel {title:?} gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {title:?} needs a description (its tooltip)"
        );
        assert_eq!(panel["datasource"], expected, "panel {title:?}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"], expected, "panel {title:?} target");
        }
    }
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(variable["datasource"], expected, "variable {}", variable["name"]);
    }

    // grafana/README.md describes every panel under its title, with its queries as written
    // there: without the job and instance filter every query carries.
    let guide = read_repository_file("grafana/README.md");
    let mut titles = BTreeSet::new();
    let mut undescribed = Vec::new();
    for (title, panel) in data_panels(&dashboard) {
        assert!(titles.insert(title.clone()), "two panels are titled {title:?}");
        let Some(section) = guide.split(&format!("\n#### {title}\n")).nth(1).and_then(|rest| rest.split("\n#").next())
        else {
            undescribed.push(format!("no \"#### {title}\" section"));
            continue;
        };
        for target in panel["targets"].as_array().expect("targets") {
            let expression = target["expr"].as_str().unwrap_or_default();
            if !expression.contains(INSTANCE_FILTER) {
                undescribed.push(format!("{title:?}: {expression} lacks {INSTANCE_FILTER}"));
            }
            let shown =
                expression.replace(&format!("{{{INSTANCE_FILTER}}}"), "").replace(&format!("{INSTANCE_FILTER}, "), "");
            if !section.contains(&shown) {
                undescribed.push(format!("{title:?} does not show {shown}"));
            }
        }
    }
    assert!(undescribed.is_empty(), "grafana/README.md is out of step with the dashboard:\n{}", undescribed.join("\n"));
    let provisioning = read_repository_file("grafana/provisioning/dashboards/mailwarden.yaml");
    assert!(provisioning.contains("type: file") && provisioning.contains("path: "));
    let datasources = read_repository_file("grafana/provisioning/datasources/mailwarden.yaml");
    assert!(datasources.contains("type: prometheus"));
}

#[test]
fn the_readme_scrape_config_passes_promtool_check_config() {
    if !require_prometheus() {
        return;
    }
    let section = readme_metrics_section();
    let example = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the Metrics section has a ```yaml scrape config example");
    let token_path = "/etc/prometheus/mailwarden_admin_token";
    assert!(example.contains(token_path), "the example reads the token from {token_path}");
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("mailwarden_admin_token");
    fs::write(&token_file, "a-token").expect("write token file");
    let config = dir.path().join("prometheus.yml");
    fs::write(&config, example.replace(token_path, &token_file.display().to_string())).expect("write prometheus.yml");
    let verdict = promtool_check_config(&config);
    assert!(verdict.success, "promtool check config rejects the README example:\n{}", verdict.output);
}
