//! TLS on every listener, against the real binary with certificates made in code
//! (tests/support/tls.rs): Dovecot 2.3 asking over https, the admin listener requiring client
//! certificates and the CLI presenting one, a reload serving a renewed certificate (and
//! keeping the old one when the new file is broken), errors naming the key and the path, and
//! the Redis store over rediss://. Dovecot 2.4 (tests/support/dovecot24.rs) over https too.

mod support;

use std::fs;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mailwarden::store::{RedisSettings, RedisStore};
use support::dovecot::{self, Dovecot, imap_login};
use support::dovecot24::{self, Dovecot24, Setup};
use support::mailwarden::{Mailwarden, free_port, login_body, report_body};
use support::redis::{RedisCluster, RedisServer};
use support::tls::{PemPair, TestCa, agent, served_certificate};

fn tls_section(key: &str, pair: &PemPair) -> String {
    format!("{key}_cert = \"{}\"\n{key}_key = \"{}\"\n", pair.cert.display(), pair.key.display())
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_policy_listener_answers_dovecot_over_https_and_refuses_plain_http() {
    let ca = TestCa::new("policy");
    let server = ca.server("policy", &["127.0.0.1"], 1);
    let mut mw = Mailwarden::configure(&format!("[tls]\n{}", tls_section("policy", &server)));
    mw.use_tls(agent(&ca.cert, None), true, false);
    mw.restart();
    let (status, body) = mw.policy("allow", &login_body("203.0.113.7", "alice@example.com", "ab"));
    assert_eq!((status, body.as_str()), (200, r#"{"status":0,"msg":""}"#));
    let plain = ureq::get(format!("http://{}/?command=allow", mw.policy_addr)).call();
    assert!(plain.is_err(), "plain HTTP must not be answered on a TLS listener: {plain:?}");

    // Turning TLS on for the admin listener and off for the policy listener needs a restart,
    // and the reload says so; both keep speaking as they did.
    let admin = ca.server("admin", &["127.0.0.1"], 2);
    mw.write_config("", &format!("[tls]\n{}", tls_section("admin", &admin)));
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tls.policy_cert") && body.contains("tls.admin_cert"), "restart_required names both: {body}");
    assert_eq!(served_certificate(mw.policy_addr, &ca.cert).unwrap(), server.der());
    assert_eq!(mw.admin("GET", "/healthz").0, 200, "the admin listener still speaks plain HTTP");
}

#[test]
fn dovecot_asks_over_https_and_shows_the_refusal_to_the_imap_client() {
    if !dovecot::require_dovecot() {
        return;
    }
    let ca = TestCa::new("dovecot");
    let server = ca.server("policy", &["127.0.0.1"], 1);
    let mut mw = Mailwarden::configure(&format!("[tls]\n{}", tls_section("policy", &server)));
    mw.use_tls(agent(&ca.cert, None), true, false);
    mw.restart();
    assert!(mw.policy_url().starts_with("https://"));
    let dovecot = Dovecot::start_trusting(&mw.policy_url(), &mw.api_key, &ca.cert);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let logs = || format!("\n--- Dovecot ---\n{}\n--- mailwarden ---\n{}", dovecot.log(), mw.log());
    for i in 0..5 {
        let outcome = imap_login(&dovecot, attacker, "alice@example.com", &format!("wrong-{i}"));
        assert!(
            !outcome.ok && outcome.line.starts_with("a NO [AUTHENTICATIONFAILED]"),
            "{i}: {:?}{}",
            outcome.line,
            logs()
        );
        mw.wait_for_reports(i + 1);
    }
    let refused = imap_login(&dovecot, attacker, "alice@example.com", "alice-secret");
    assert!(
        refused.line.starts_with("a NO [ALERT] ") && refused.line.contains("Too many failed logins from 127.0.0.2;"),
        "the ban's message reaches the IMAP client through https: {:?}{}",
        refused.line,
        logs()
    );
    let welcome = imap_login(&dovecot, Ipv4Addr::new(127, 0, 0, 3), "alice@example.com", "alice-secret");
    assert!(welcome.ok, "{:?}{}", welcome.line, logs());
    assert!(!dovecot.log().contains(": Error: "), "no policy errors in Dovecot's log:{}", logs());
    assert!(!mw.log().contains("Illegal SNI"), "Dovecot's IP-address SNI is not warned about on every connection");
}

#[test]
fn dovecot_does_not_trust_a_policy_server_whose_certificate_another_ca_signed() {
    if !dovecot::require_dovecot() {
        return;
    }
    let ca = TestCa::new("policy");
    let server = ca.server("policy", &["127.0.0.1"], 1);
    let mut mw = Mailwarden::configure(&format!("[tls]\n{}", tls_section("policy", &server)));
    mw.use_tls(agent(&ca.cert, None), true, false);
    mw.restart();
    let other_ca = TestCa::new("other");
    let dovecot = Dovecot::start_trusting(&mw.policy_url(), &mw.api_key, &other_ca.cert);
    // The shipped snippet fails open (auth_policy_reject_on_fail = no): the login goes
    // through, and Dovecot logs why it could not ask.
    let outcome = imap_login(&dovecot, Ipv4Addr::new(127, 0, 0, 2), "alice@example.com", "alice-secret");
    assert!(outcome.ok, "{:?}", outcome.line);
    let log = dovecot.log();
    assert!(log.contains("Error: policy") && log.contains("certificate"), "Dovecot names the certificate:\n{log}");
    assert_eq!(mw.reports_answered(), 0, "no request reached mailwarden");
}

#[test]
fn the_admin_listener_refuses_a_client_without_a_certificate_and_the_cli_works_with_one() {
    let ca = TestCa::new("admin");
    let server = ca.server("admin", &["127.0.0.1"], 1);
    let cli = ca.client("cli", "mailwarden-cli");
    let section = format!(
        "[tls]\n{}admin_client_ca = \"{ca}\"\ncli_ca = \"{ca}\"\ncli_cert = \"{}\"\ncli_key = \"{}\"\n",
        tls_section("admin", &server),
        cli.cert.display(),
        cli.key.display(),
        ca = ca.cert.display(),
    );
    let mut mw = Mailwarden::configure(&section);
    mw.use_tls(agent(&ca.cert, Some(&cli)), false, true);
    mw.restart();
    assert_eq!(mw.admin("GET", "/healthz").0, 200, "with the client certificate");

    let url = format!("https://{}/healthz", mw.admin_addr);
    let without = agent(&ca.cert, None).get(&url).call();
    assert!(without.is_err(), "a client without a certificate must not get an answer: {without:?}");
    let other_ca = TestCa::new("stranger");
    let stranger = other_ca.client("stranger", "someone");
    let foreign = agent(&ca.cert, Some(&stranger)).get(&url).call();
    assert!(foreign.is_err(), "a certificate from another CA must be refused: {foreign:?}");

    let output = mw.cli(&["bans"]);
    assert!(output.status.success(), "the CLI presents tls.cli_cert: {}", stderr(&output));
    let output = mw.cli(&["block", "198.51.100.0/24", "--comment", "over mTLS"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(mw.admin("GET", "/api/v1/blocks").1.contains("198.51.100.0/24"));

    // Without its certificate the CLI is refused too, and says where it went.
    let text = fs::read_to_string(&mw.config_path).unwrap();
    let without_cert: String = text
        .lines()
        .filter(|l| !l.starts_with("cli_cert") && !l.starts_with("cli_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&mw.config_path, without_cert).unwrap();
    let output = mw.cli(&["bans"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("cannot reach mailwarden's admin API at {}", mw.admin_addr)),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_reload_serves_a_renewed_certificate_and_a_broken_one_keeps_the_old() {
    let ca = TestCa::new("renewal");
    let first = ca.server("policy", &["127.0.0.1"], 1);
    let mut mw = Mailwarden::configure(&format!("[tls]\n{}", tls_section("policy", &first)));
    mw.use_tls(agent(&ca.cert, None), true, false);
    mw.restart();
    let first_der = first.der();
    assert_eq!(served_certificate(mw.policy_addr, &ca.cert).unwrap(), first_der);

    // Renewed in place, as certbot or an ACME client does: same paths, new serial.
    let renewed = ca.server("policy", &["127.0.0.1"], 2);
    let renewed_der = renewed.der();
    assert_ne!(renewed_der, first_der);
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_certificate(mw.policy_addr, &ca.cert).unwrap(), renewed_der, "served without a restart");

    // A half-written file: the reload is refused, names the key and the path, and the
    // certificate in force stays served.
    fs::write(&renewed.cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("tls.policy_cert") && body.contains(&renewed.cert.display().to_string()), "{body}");
    assert_eq!(served_certificate(mw.policy_addr, &ca.cert).unwrap(), renewed_der);
    assert_eq!(mw.policy("allow", &login_body("203.0.113.7", "alice@example.com", "ab")).0, 200);

    // SIGHUP re-reads them too.
    let third = ca.server("policy", &["127.0.0.1"], 3);
    mw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_certificate(mw.policy_addr, &ca.cert).unwrap() != third.der() {
        assert!(Instant::now() < deadline, "SIGHUP did not serve the new certificate:\n{}", mw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_self_service_page_is_served_over_https_with_its_own_certificate() {
    let ca = TestCa::new("public");
    let page = ca.server("public", &["127.0.0.1"], 7);
    let policy = ca.server("policy", &["127.0.0.1"], 8);
    let mut mw = Mailwarden::configure("");
    let port = free_port();
    mw.write_config(
        &format!("public_listen = \"127.0.0.1:{port}\"\n"),
        &format!("[tls]\n{}{}", tls_section("public", &page), tls_section("policy", &policy)),
    );
    mw.use_tls(agent(&ca.cert, None), true, false);
    mw.restart();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(served_certificate(address, &ca.cert).unwrap(), page.der(), "the page's own certificate");
    assert_eq!(served_certificate(mw.policy_addr, &ca.cert).unwrap(), policy.der());
    let mut response = agent(&ca.cert, None).get(format!("https://{address}/")).call().expect("the page answers");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.body_mut().read_to_string().unwrap().contains("<html"), "the unblock page");
}

#[test]
fn a_certificate_that_cannot_be_read_is_named_with_its_key_and_path() {
    let ca = TestCa::new("errors");
    let server = ca.server("public", &["127.0.0.1"], 1);
    let missing = ca.dir.path().join("missing.pem");
    let mw = Mailwarden::configure(&format!(
        "[tls]\npublic_cert = \"{}\"\npublic_key = \"{}\"\n",
        missing.display(),
        server.key.display()
    ));
    let output = mw.cli(&["check-config"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("tls.public_cert: cannot read {}", missing.display())),
        "{}",
        stderr(&output)
    );

    // A key that is not the certificate's.
    let other = ca.server("other", &["127.0.0.1"], 2);
    mw.write_config(
        "",
        &format!("[tls]\npublic_cert = \"{}\"\npublic_key = \"{}\"\n", server.cert.display(), other.key.display()),
    );
    let output = mw.cli(&["check-config"]);
    assert!(
        stderr(&output).contains("tls.public_key:") && stderr(&output).contains("does not go with"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn cluster_mode_keeps_its_bans_in_redis_over_rediss_and_refuses_a_server_it_cannot_verify() {
    let ca = TestCa::new("redis");
    let server = ca.server("redis", &["127.0.0.1"], 1);
    let Some(redis) = RedisServer::start_tls(&server.cert, &server.key, &ca.cert) else { return };
    let store = |url: String, ca_file: &std::path::Path| RedisSettings {
        urls: vec![url],
        cluster: false,
        prefix: "mw:".into(),
        budget: Duration::from_millis(500),
        ca_file: Some(ca_file.to_path_buf()),
    };
    let other_ca = TestCa::new("not-redis");
    let untrusting = RedisStore::open(&store(redis.tls_url(), &other_ca.cert)).expect("open");
    assert!(!untrusting.is_up(), "a certificate from another CA must not be accepted");

    let mw = Mailwarden::start_with(&format!(
        "[store]\nbackend = \"redis\"\nurl = \"{}\"\nca_file = \"{}\"\ntimeout = \"500ms\"\nprefix = \"tls:\"\n",
        redis.tls_url(),
        ca.cert.display()
    ));
    for i in 0..5 {
        mw.policy("report", &report_body("203.0.113.7", "alice@example.com", &format!("guess-{i}"), false));
    }
    let (_, answer) = mw.policy("allow", &login_body("203.0.113.7", "alice@example.com", "x"));
    assert!(answer.contains(r#""status":-1"#), "banned after five guesses: {answer}");
    // Read through Redis's plain port: the ban travelled over TLS to this server.
    let stored = redis.cli(&["HKEYS", "tls:bans"]);
    assert!(stored.contains("203.0.113.7"), "the ban is in Redis: {stored:?}\n{}", mw.log());
    assert!(mw.log().contains("connected to the shared store (Redis)"), "{}", mw.log());
}

#[test]
fn dovecot_24_asks_over_https_and_shows_the_refusal_to_the_imap_client() {
    let Some(root) = dovecot24::require_dovecot24() else { return };
    let ca = TestCa::new("dovecot24");
    let server = ca.server("policy", &["127.0.0.1"], 1);
    let mut mw = Mailwarden::configure(&format!("[tls]\n{}", tls_section("policy", &server)));
    mw.use_tls(agent(&ca.cert, None), true, false);
    mw.restart();
    let setup = Setup { trusted_ca: Some(ca.cert.clone()), ..Setup::default() };
    let dovecot = Dovecot24::start_with(&root, &mw.policy_url(), &mw.api_key, &setup);
    let logs = || format!("\n--- Dovecot 2.4 ---\n{}\n--- mailwarden ---\n{}", dovecot.log(), mw.log());
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    for i in 0..5 {
        let outcome = imap_login(&dovecot, attacker, "alice@example.com", &format!("wrong-{i}"));
        assert!(!outcome.ok, "{i}: {:?}{}", outcome.line, logs());
        mw.wait_for_reports(i + 1);
    }
    let refused = imap_login(&dovecot, attacker, "alice@example.com", "alice-secret");
    assert!(
        refused.line.starts_with("a NO [ALERT] ") && refused.line.contains("Too many failed logins from 127.0.0.2;"),
        "{:?}{}",
        refused.line,
        logs()
    );
    let welcome = imap_login(&dovecot, Ipv4Addr::new(127, 0, 0, 3), "alice@example.com", "alice-secret");
    assert!(welcome.ok, "{:?}{}", welcome.line, logs());
}

#[test]
fn a_redis_cluster_is_reached_over_rediss_with_the_ca_file() {
    let ca = TestCa::new("redis-cluster");
    let node = ca.peer("redis", &["127.0.0.1"], 1);
    let Some(cluster) = RedisCluster::start_tls(3, &node.cert, &node.key, &ca.cert) else { return };
    let urls: Vec<String> = cluster.tls_urls().iter().map(|u| format!("{u:?}")).collect();
    let mw = Mailwarden::start_with(&format!(
        "[store]\nbackend = \"redis\"\ncluster_urls = [{}]\nca_file = \"{}\"\ntimeout = \"500ms\"\nprefix = \"tls:\"\n",
        urls.join(", "),
        ca.cert.display()
    ));
    for i in 0..5 {
        mw.policy("report", &report_body("203.0.113.8", "alice@example.com", &format!("guess-{i}"), false));
    }
    let (_, answer) = mw.policy("allow", &login_body("203.0.113.8", "alice@example.com", "x"));
    assert!(answer.contains(r#""status":-1"#), "banned after five guesses: {answer}\n{}", mw.log());
    let (_, health) = mw.admin("GET", "/healthz");
    assert!(!health.contains("degraded"), "the store is up: {health}\n{}", mw.log());
    let stored = cluster.nodes[0].cli(&["HKEYS", "tls:bans"]);
    assert!(stored.contains("203.0.113.8"), "the ban is in the cluster: {stored:?}\n{}", mw.log());
}
