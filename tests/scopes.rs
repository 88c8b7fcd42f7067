//! Scoped admin tokens and the audit trail against the real binary: every route of the served
//! OpenAPI document with every scope, a `domain:` token's attempts to reach another domain,
//! revocation, what the database holds, the per-address limit on wrong tokens, and who the
//! audit trail says lifted a ban.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use mailwarden::http::admin::ROUTES;
use mailwarden::principal::ScopeKind;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::mailwarden::{Mailwarden, fresh_pwhash, login_body, report_body};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn ban(mw: &Mailwarden, remote: &str) {
    for _ in 0..5 {
        assert_eq!(mw.policy("report", &report_body(remote, "alice@example.com", &fresh_pwhash(), false)).0, 200);
    }
    assert_eq!(mw.admin("GET", &format!("/api/v1/bans/{remote}")).0, 200, "{remote} is banned");
}

/// The OpenAPI path with each parameter filled in: mailboxes of the domain token's own domain,
/// so that a route it reaches answers it.
fn filled(path: &str) -> String {
    path.replace("{addr}", "203.0.113.7")
        .replace("{login}", "bob@example.com")
        .replace("{number}", "1")
        .replace("{name}", "nobody")
}

#[test]
fn every_admin_route_refuses_each_scope_it_does_not_reach_with_403_and_lets_the_others_through() {
    let mw = Mailwarden::start();
    let tokens = [
        (ScopeKind::Support, mw.create_token("desk", "support")),
        (ScopeKind::Domain, mw.create_token("customer", "domain:example.com")),
        (ScopeKind::Metrics, mw.create_token("prometheus", "metrics")),
        (ScopeKind::Admin, mw.create_token("ops", "admin")),
    ];
    let document = json(&mw.admin("GET", "/api/v1/openapi.json").1);
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            let method = method.to_uppercase();
            let route = ROUTES
                .iter()
                .find(|route| route.method == method && route.openapi_path() == *path)
                .unwrap_or_else(|| panic!("{method} {path} is served but has no reach in the route table"));
            for (scope, token) in &tokens {
                let (status, body) = mw.admin_as(token, &method, &filled(path), None);
                if route.reach.admits(*scope) {
                    assert!(![401, 403, 429].contains(&status), "{scope:?} reaches {method} {path}: {status} {body}");
                } else {
                    assert_eq!(status, 403, "{scope:?} must not reach {method} {path}: {body}");
                    assert_eq!(json(&body)["error"], "forbidden");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, ROUTES.len() * tokens.len(), "every route with every scope");
}

#[test]
fn a_domain_token_sees_and_changes_only_its_own_domains_mailboxes_however_another_is_spelt() {
    let mw = Mailwarden::start();
    let rules = r#"{"default":"allow","rules":[{"action":"block","network":"198.51.100.0/24"}]}"#;
    for key in ["bob@example.com", "@example.com", "bob@other.com", "@other.com", "bob"] {
        assert_eq!(mw.admin_put(&format!("/api/v1/mailboxes/{key}/firewall"), rules).0, 200, "{key}");
    }
    let customer = mw.create_token("customer", "domain:Example.COM");

    let listed = json(&mw.admin_as(&customer, "GET", "/api/v1/mailboxes", None).1);
    let keys: Vec<&str> =
        listed["mailboxes"].as_array().unwrap().iter().map(|m| m["login"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&"bob@example.com") && keys.contains(&"@example.com"), "{keys:?}");
    assert_eq!(listed["total"], 2);
    let own = mw.admin_as(&customer, "GET", "/api/v1/mailboxes/Bob@EXAMPLE.com/firewall", None);
    assert_eq!(own.0, 200, "its own mailbox in any case: {}", own.1);
    let moved = mw.admin_as(
        &customer,
        "POST",
        "/api/v1/mailboxes/bob@example.com/firewall/rules",
        Some(r#"{"action":"allow","address":"198.51.100.7","position":1}"#),
    );
    assert_eq!(moved.0, 201, "{}", moved.1);
    let shown = json(&mw.admin("GET", "/api/v1/mailboxes/bob@example.com/firewall").1);
    assert_eq!(shown["changed_by"], "customer", "the rule set says who changed it last: {shown}");

    for spelling in [
        "Bob@OTHER.com",
        "BOB@other.COM",
        "bob%40other.com",
        "bob%40OTHER.COM",
        "@other.com",
        "%40other.com",
        "@OTHER.com",
        "bob",
        "BOB",
        "bob@example.com.other.com",
        "bob@sub.example.com",
        "bob@other.com%00",
        "bob@example.com@other.com",
    ] {
        let base = format!("/api/v1/mailboxes/{spelling}/firewall");
        for (method, path, body) in [
            ("GET", base.clone(), None),
            ("PUT", base.clone(), Some(r#"{"default":"block","rules":[]}"#)),
            ("DELETE", base.clone(), None),
            ("PUT", format!("{base}/default"), Some(r#"{"action":"block"}"#)),
            ("POST", format!("{base}/rules"), Some(r#"{"action":"allow","network":"198.51.100.0/24"}"#)),
            ("POST", format!("{base}/rules/1/move"), Some(r#"{"direction":"down"}"#)),
            ("DELETE", format!("{base}/rules/1"), None),
        ] {
            let (status, answer) = mw.admin_as(&customer, method, &path, body);
            assert!([400, 403].contains(&status), "{method} {path} answered {status}: {answer}");
        }
    }
    for key in ["bob@other.com", "@other.com", "bob"] {
        let view = json(&mw.admin("GET", &format!("/api/v1/mailboxes/{key}/firewall")).1);
        assert_eq!(view["default"], "allow", "{key} is unchanged");
        assert_eq!(view["rules"].as_array().unwrap().len(), 1, "{key} is unchanged");
    }

    // The block log: a refusal each for a mailbox of each domain and a login without one.
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(r#"{"network":"203.0.113.0/24"}"#)).0, 201);
    for (remote, login) in
        [("203.0.113.1", "bob@example.com"), ("203.0.113.2", "carol@other.com"), ("203.0.113.3", "dave")]
    {
        assert_eq!(mw.policy("allow", &login_body(remote, login, "0f96")).0, 200);
    }
    let events = json(&mw.admin_as(&customer, "GET", "/api/v1/events", None).1);
    let logins: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["bob@example.com"], "only its own domain's logins");
    assert_eq!(events["total"], 1);
    let by_ip = json(&mw.admin_as(&customer, "GET", "/api/v1/events?ip=203.0.113.2", None).1);
    assert_eq!(by_ip["total"], 0, "another domain's refusal is not found by its address either");
    for login in ["carol@other.com", "Carol@OTHER.COM", "carol%40other.com", "dave", "x@example.com.evil"] {
        let (status, answer) = mw.admin_as(&customer, "GET", &format!("/api/v1/events?login={login}"), None);
        assert_eq!(status, 403, "login filter {login}: {answer}");
    }
    let all = json(&mw.admin("GET", "/api/v1/events").1);
    assert_eq!(all["total"], 3, "the admin sees every refusal");
}

#[test]
fn a_token_is_shown_once_stored_only_as_its_digest_and_refused_at_once_when_revoked() {
    let mw = Mailwarden::start();
    let output = mw.cli(&["token", "create", "--name", "desk", "--scope", "support", "--expires", "90d"]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let token = printed.lines().next().unwrap().trim().to_string();
    assert!(token.starts_with("mwt_") && token.len() == 68, "{printed}");

    assert_eq!(mw.admin_as(&token, "GET", "/api/v1/bans", None).0, 200);
    let listed = String::from_utf8_lossy(&mw.cli(&["token", "list"]).stdout).into_owned();
    assert!(listed.contains("desk") && listed.contains("support") && listed.contains("(to the hour)"), "{listed}");
    assert!(!listed.contains(&token), "{listed}");
    let api_list = mw.admin("GET", "/api/v1/tokens").1;
    assert!(api_list.contains("\"desk\"") && !api_list.contains(&token), "{api_list}");

    // Only the digest, in the database and in its write-ahead log.
    let state = mw.dir.path().join("state");
    let database = rusqlite::Connection::open(state.join("mailwarden.db")).unwrap();
    let stored: (String, String) = database
        .query_row("SELECT scope, digest FROM tokens WHERE name = 'desk'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let digest: String = Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(stored, ("support".to_string(), digest));
    for file in ["mailwarden.db", "mailwarden.db-wal"] {
        let bytes = std::fs::read(state.join(file)).unwrap_or_default();
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "{file} holds the token");
    }
    assert!(!mw.log().contains(&token), "the log holds the token");
    let check = String::from_utf8_lossy(&mw.cli(&["check-config"]).stdout).into_owned();
    assert!(!check.contains(&token));

    for (body, field) in [
        (r#"{"name":"a b","scope":"support"}"#, "name"),
        (r#"{"name":"admin-token","scope":"admin"}"#, "name"),
        (r#"{"name":"x","scope":"root"}"#, "scope"),
        (r#"{"name":"x","scope":"domain:localhost"}"#, "scope"),
        (r#"{"name":"x","scope":"support","expires":"soon"}"#, "expires"),
    ] {
        let (status, answer) = mw.admin_post("/api/v1/tokens", Some(body));
        assert_eq!((status, json(&answer)["field"].as_str()), (400, Some(field)), "{body}: {answer}");
    }
    let long_name = format!(r#"{{"name":"{}","scope":"support"}}"#, "x".repeat(65));
    assert_eq!(json(&mw.admin_post("/api/v1/tokens", Some(&long_name)).1)["field"], "name");
    let (status, answer) = mw.admin_post("/api/v1/tokens", Some(r#"{"name":"desk","scope":"admin"}"#));
    assert_eq!((status, json(&answer)["error"].as_str()), (409, Some("token_exists")), "{answer}");

    let revoked = mw.cli(&["token", "revoke", "desk"]);
    assert!(revoked.status.success(), "{revoked:?}");
    let (status, body) = mw.admin_as(&token, "GET", "/api/v1/bans", None);
    assert_eq!(status, 401, "refused at once after its revocation: {body}");
    let audit = String::from_utf8_lossy(&mw.cli(&["audit", "--action", "token_revoked"]).stdout).into_owned();
    assert!(audit.contains("admin-token") && audit.contains("desk"), "{audit}");
}

#[test]
fn the_audit_trail_names_the_token_that_lifted_a_ban_and_the_one_that_lifted_and_trusted() {
    let mw = Mailwarden::start();
    let desk = mw.create_token("desk", "support");
    ban(&mw, "203.0.113.7");
    assert_eq!(mw.admin_as(&desk, "DELETE", "/api/v1/bans/203.0.113.7", None).0, 200);
    ban(&mw, "203.0.113.8");
    let (status, body) = mw.admin_as(&desk, "DELETE", "/api/v1/bans/203.0.113.8?trust=true&comment=office%20NAT", None);
    assert_eq!(status, 200, "{body}");
    let trusted = json(&mw.admin("GET", "/api/v1/trusted").1);
    let entry = &trusted["entries"].as_array().unwrap()[0];
    assert_eq!((entry["network"].as_str(), entry["comment"].as_str()), (Some("203.0.113.8/32"), Some("office NAT")));
    assert_eq!(entry["added_by"], "desk", "the entry says who made it: {entry}");
    assert_eq!(mw.admin_as(&desk, "POST", "/api/v1/trusted", Some(r#"{"network":"192.0.2.1"}"#)).0, 403);
    // Lift and trust never unblocks what the lists block.
    assert_eq!(mw.admin_post("/api/v1/blocks", Some(r#"{"network":"198.51.100.0/24"}"#)).0, 201);
    ban(&mw, "198.51.100.9");
    let (status, body) = mw.admin_as(&desk, "DELETE", "/api/v1/bans/198.51.100.9?trust=true", None);
    assert_eq!((status, json(&body)["error"].as_str()), (409, Some("inside_blocked_network")), "{body}");
    assert_eq!(mw.admin("GET", "/api/v1/bans/198.51.100.9").0, 200, "the ban stays");

    let lifted = json(&mw.admin("GET", "/api/v1/audit?action=ban_lifted").1);
    let record = &lifted["records"][0];
    assert_eq!((record["actor"].as_str(), record["target"].as_str()), (Some("desk"), Some("203.0.113.7")));
    let trusted = json(&mw.admin("GET", "/api/v1/audit?actor=desk").1);
    assert_eq!(trusted["total"], 2, "{trusted}");
    assert_eq!(trusted["records"][0]["action"], "ban_lifted_and_trusted");
    assert!(trusted["records"][0]["detail"].as_str().unwrap().contains("office NAT"));
    let printed = String::from_utf8_lossy(&mw.cli(&["audit", "--actor", "desk"]).stdout).into_owned();
    assert!(printed.contains("ban_lifted_and_trusted") && printed.contains("203.0.113.7"), "{printed}");
    assert_eq!(mw.admin_as(&desk, "GET", "/api/v1/audit", None).0, 403, "the audit trail is the admin's");
}

/// `GET /healthz` with `token` from `from` (a loopback address); the answer's status.
fn healthz_from(mw: &Mailwarden, from: [u8; 4], token: &str) -> u16 {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&mw.admin_addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[test]
fn an_address_that_sent_ten_wrong_tokens_is_refused_until_its_minute_has_passed_and_it_is_counted() {
    let mw = Mailwarden::start();
    let guesser = [127, 0, 0, 9];
    for i in 0..10 {
        assert_eq!(healthz_from(&mw, guesser, &format!("mwt_guess{i}")), 401, "guess {i}");
    }
    assert_eq!(healthz_from(&mw, guesser, "mwt_guess10"), 429);
    assert_eq!(healthz_from(&mw, guesser, &mw.admin_token), 429, "even the right token, within the minute");
    assert_eq!(healthz_from(&mw, [127, 0, 0, 10], &mw.admin_token), 200, "another address is not limited");
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_admin_auth_failures_total{reason=\"wrong\"} 10"), "{metrics}");
    assert!(metrics.contains("mailwarden_admin_auth_failures_total{reason=\"rate_limited\"} 2"), "{metrics}");
    assert!(!metrics.contains("mwt_guess"), "no token in a label");
}

#[test]
fn every_kind_of_change_through_the_api_is_in_the_audit_trail_with_the_token_that_made_it() {
    let mw = Mailwarden::start();
    let ops = mw.create_token("ops", "admin");
    ban(&mw, "203.0.113.7");
    ban(&mw, "203.0.113.8");
    let changes: &[(&str, &str, Option<&str>)] = &[
        ("DELETE", "/api/v1/bans/203.0.113.7", None),
        ("DELETE", "/api/v1/bans/203.0.113.8?trust=true", None),
        ("POST", "/api/v1/blocks", Some(r#"{"network":"198.51.100.0/24"}"#)),
        ("DELETE", "/api/v1/blocks?network=198.51.100.0/24", None),
        (
            "PUT",
            "/api/v1/mailboxes/bob@example.com/firewall",
            Some(r#"{"default":"allow","rules":[{"action":"block","network":"198.51.100.0/24"}]}"#),
        ),
        (
            "POST",
            "/api/v1/mailboxes/bob@example.com/firewall/rules",
            Some(r#"{"action":"allow","address":"198.51.100.7"}"#),
        ),
        ("POST", "/api/v1/mailboxes/bob@example.com/firewall/rules/2/move", Some(r#"{"direction":"up"}"#)),
        ("DELETE", "/api/v1/mailboxes/bob@example.com/firewall/rules/2", None),
        ("PUT", "/api/v1/mailboxes/bob@example.com/firewall/default", Some(r#"{"action":"block"}"#)),
        ("DELETE", "/api/v1/mailboxes/bob@example.com/firewall", None),
        ("POST", "/api/v1/reload", None),
        ("POST", "/api/v1/logins/alice@example.com/reset", None),
        ("POST", "/api/v1/tokens", Some(r#"{"name":"temp","scope":"metrics"}"#)),
        ("DELETE", "/api/v1/tokens/temp", None),
    ];
    for (method, path, body) in changes {
        let (status, answer) = mw.admin_as(&ops, method, path, *body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
    }
    let trail = json(&mw.admin("GET", "/api/v1/audit?actor=ops").1);
    let mut actions: Vec<&str> =
        trail["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            "ban_lifted",
            "ban_lifted_and_trusted",
            "list_entry_added",
            "list_entry_removed",
            "firewall_replaced",
            "rule_added",
            "rule_moved",
            "rule_deleted",
            "default_action_set",
            "firewall_reset",
            "policy_reloaded",
            "login_reset",
            "token_created",
            "token_revoked",
        ]
    );
    let created = json(&mw.admin("GET", "/api/v1/audit?action=token_created").1);
    let creators: Vec<&str> =
        created["records"].as_array().unwrap().iter().map(|r| r["actor"].as_str().unwrap()).collect();
    assert_eq!(creators, ["ops", "admin-token"], "the policy file's token acts as admin-token");
}
