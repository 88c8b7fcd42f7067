//! The self-service unblock page against the real binary: what it shows, the proof-of-work
//! check, and the abuse limits. The browser test (tests/browser_unblock.rs) drives the same
//! page in a real Chromium.

mod support;

use serde_json::Value;
use support::mailwarden::{Mailwarden, free_port, fresh_pwhash, login_body, report_body};
use support::redis::RedisServer;

/// A server whose public page listens on a free port, as configured by `extra`.
fn start(server_extra: &str, extra: &str) -> (Mailwarden, String) {
    let mut mw = Mailwarden::configure("");
    let port = free_port();
    mw.write_config(&format!("public_listen = \"127.0.0.1:{port}\"\n{server_extra}"), extra);
    mw.restart();
    (mw, format!("http://127.0.0.1:{port}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, Option<String>) {
    let request = headers.iter().fold(agent().get(url), |r, (k, v)| r.header(*k, *v));
    let mut response = request.call().expect("the page answers");
    let csp = response.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).map(str::to_string);
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default(), csp)
}

fn ban(mw: &Mailwarden, remote: &str) {
    for _ in 0..5 {
        let body = report_body(remote, "alice@example.com", &fresh_pwhash(), false);
        assert_eq!(mw.policy("report", &body).0, 200);
    }
}

/// Fetches a challenge (sending `headers`) and solves it like the page's script.
fn solved_challenge(base: &str, headers: &[(&str, &str)]) -> Value {
    let (status, text, _) = get(&format!("{base}/challenge"), headers);
    assert_eq!(status, 200, "{text}");
    let challenge: altcha_lib_rs::Challenge = serde_json::from_str(&text).expect("an ALTCHA challenge");
    let number = altcha_lib_rs::solve_challenge(
        &challenge.challenge,
        &challenge.salt,
        Some(challenge.algorithm),
        Some(challenge.maxnumber),
        0,
    )
    .expect("solvable");
    serde_json::json!({
        "algorithm": "SHA-256", "challenge": challenge.challenge, "number": number,
        "salt": challenge.salt, "signature": challenge.signature,
    })
}

/// Fetches a challenge, solves it like the page's script, and posts the solution.
fn solve_and_unblock(base: &str) -> (u16, Value) {
    solve_and_unblock_as(base, &[])
}

/// The same, every request with `headers`.
fn solve_and_unblock_as(base: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let payload = solved_challenge(base, headers);
    post_unblock_as(base, &payload, headers)
}

fn post_unblock(base: &str, payload: &Value) -> (u16, Value) {
    post_unblock_as(base, payload, &[])
}

fn post_unblock_as(base: &str, payload: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let request = agent().post(format!("{base}/unblock")).header("Content-Type", "application/json");
    let mut response = headers.iter().fold(request, |r, (k, v)| r.header(*k, *v)).send(payload.to_string()).unwrap();
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap())
}

fn allow_status(mw: &Mailwarden, remote: &str) -> i64 {
    let (_, body) = mw.policy("allow", &login_body(remote, "alice@example.com", "0f96"));
    serde_json::from_str::<Value>(&body).unwrap()["status"].as_i64().unwrap()
}

#[test]
fn the_page_shows_the_ban_its_cause_and_the_steps_then_unblocks_after_the_check() {
    let (mw, base) =
        start("", "[self_service]\nprovider_name = \"Example Mail\"\nsupport_contact = \"help@example.com\"\n");
    let (status, page, csp) = get(&format!("{base}/"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Your address is 127.0.0.1.") && page.contains("It is not blocked."), "{page}");
    assert!(csp.is_some_and(|c| c.contains("script-src 'self'")), "a content security policy");

    ban(&mw, "127.0.0.1");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("It is blocked until"), "{page}");
    assert!(page.contains("5 failed logins to a***e@example.com over IMAP"), "a masked login and the count: {page}");
    assert!(!page.contains("alice@example.com"), "never the full login");
    assert!(
        page.contains("Find the device") && page.contains("<button type=\"submit\">Unblock my address</button>"),
        "{page}"
    );
    assert!(page.contains("This page is run by Example Mail."));

    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), 0, "the next login passes the policy endpoint");
    let events = mw.admin("GET", "/api/v1/events?reason=self_unblock").1;
    assert!(events.contains("127.0.0.1"), "{events}");
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_bans_lifted_total{cause=\"self_service\"} 1"), "{metrics}");
    assert!(metrics.contains("mailwarden_self_unblocks_total{result=\"unblocked\"} 1"));
}

#[test]
fn on_an_office_the_page_says_one_account_is_paused_while_the_others_are_not_and_lifts_it() {
    let (mw, base) = start("", "");
    for n in 0..3 {
        let body = report_body("127.0.0.1", &format!("colleague{n}@example.com"), "0f96", true);
        assert_eq!(mw.policy("report", &body).0, 200);
    }
    ban(&mw, "127.0.0.1");
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1, "alice is refused from the office");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(
        page.contains("Logins to a***e@example.com from your address are paused until ")
            && page.contains("because of wrong passwords; other accounts are not affected."),
        "{page}"
    );
    assert!(!page.contains("It is blocked until"), "the address is not blocked: {page}");
    assert!(!page.contains("alice@example.com"), "never the full login");
    assert!(page.contains("<button type=\"submit\">Unblock my address</button>"), "{page}");

    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), 0, "alice logs in from the office again");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("It is not blocked."), "{page}");
}

#[test]
fn the_fourth_unblock_of_the_day_is_refused_and_sends_people_to_support() {
    let (mw, base) = start("", "[self_service]\nsupport_contact = \"help@example.com\"\n");
    for round in 1..=3 {
        ban(&mw, "127.0.0.1");
        let (status, answer) = solve_and_unblock(&base);
        assert_eq!(status, 200, "round {round}: {answer}");
    }
    ban(&mw, "127.0.0.1");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("unblocked 3 times today already. Please contact help@example.com."), "{page}");
    assert!(!page.contains("<button"), "no button once the limit is reached");
    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (429, Some(false)), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1, "still banned");
}

#[test]
fn solutions_are_single_use_and_bad_ones_change_nothing() {
    let (mw, base) = start("", "");
    ban(&mw, "127.0.0.1");
    let (_, text, _) = get(&format!("{base}/challenge"), &[]);
    let challenge: altcha_lib_rs::Challenge = serde_json::from_str(&text).unwrap();
    let wrong = serde_json::json!({"algorithm":"SHA-256","challenge":challenge.challenge,"number":challenge.maxnumber + 1,"salt":challenge.salt,"signature":challenge.signature});
    assert_eq!(post_unblock(&base, &wrong).0, 400);
    assert_eq!(post_unblock(&base, &serde_json::json!({"nonsense": true})).0, 400);
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1);
    let number = altcha_lib_rs::solve_challenge(
        &challenge.challenge,
        &challenge.salt,
        Some(challenge.algorithm),
        Some(challenge.maxnumber),
        0,
    )
    .unwrap();
    let right = serde_json::json!({"algorithm":"SHA-256","challenge":challenge.challenge,"number":number,"salt":challenge.salt,"signature":challenge.signature});
    assert_eq!(post_unblock(&base, &right).0, 200);
    ban(&mw, "127.0.0.1");
    let (status, answer) = post_unblock(&base, &right);
    assert_eq!(status, 400, "a used solution does not unblock again");
    assert!(answer["message"].as_str().unwrap().contains("already used"), "{answer}");
}

#[test]
fn administrator_blocks_cannot_be_lifted_here() {
    let (mw, base) = start("", "[networks]\nblocked = [\"127.0.0.1\"]\n");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("blocked by the administrators"), "{page}");
    assert!(!page.contains("<button"));
    let (status, _) = solve_and_unblock(&base);
    assert_eq!(status, 403);
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1);
}

#[test]
fn a_visitor_inside_a_banned_subnet_is_sent_to_support_and_cannot_unblock_the_network() {
    let (mw, base) = start("", "[self_service]\nsupport_contact = \"help@example.com\"\n");
    // The visitor's own address is banned, then two more of its /24: the network is banned.
    for attacker in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        ban(&mw, attacker);
    }
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("Your whole network (127.0.0.0/24) is blocked until"), "{page}");
    assert!(page.contains("please contact help@example.com"), "{page}");
    assert!(!page.contains("<button"), "no unblock button for a subnet ban: {page}");

    // Lifting only the visitor's own ban would not let it in, and lifting the subnet ban would
    // let every attacker of the network back in: refused.
    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (403, Some(false)), "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.0/24") && !message.contains("{until}"), "{message}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1, "still refused");
    assert_eq!(allow_status(&mw, "127.0.0.2"), -1, "the attackers stay refused");
    let metrics = mw.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_self_unblocks_total{result=\"subnet_ban\"} 1"), "{metrics}");
    assert!(!metrics.contains("mailwarden_bans_lifted_total{cause=\"self_service\"} 1"), "nothing lifted: {metrics}");
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_is_the_visitor() {
    let (mw, base) = start("trusted_proxies = [\"127.0.0.1\"]\n", "");
    ban(&mw, "203.0.113.7");
    let (_, page, _) = get(&format!("{base}/"), &[("X-Forwarded-For", "203.0.113.7")]);
    assert!(page.contains("Your address is 203.0.113.7.") && page.contains("It is blocked until"), "{page}");
    let (untrusted_mw, untrusted) = start("", "");
    ban(&untrusted_mw, "203.0.113.7");
    let (_, page, _) = get(&format!("{untrusted}/"), &[("X-Forwarded-For", "203.0.113.7")]);
    assert!(page.contains("Your address is 127.0.0.1."), "an untrusted peer cannot claim another address: {page}");
}

#[test]
fn the_page_is_off_unless_configured() {
    let mw = Mailwarden::start();
    assert!(!mw.log().contains("self-service unblock page listening"));
}

#[test]
fn the_page_names_the_mail_app_and_a_saved_password_that_is_no_longer_valid() {
    let (mw, base) = start("", "");
    let report = |pwhash: &str, device: &str| {
        let body = format!(
            r#"{{"login":"alice@example.com","pwhash":"{pwhash}","remote":"127.0.0.1","protocol":"imap","device_id":"{device}","success":false,"policy_reject":false}}"#
        );
        assert_eq!(mw.policy("report", &body).0, 200);
    };
    let phone = r#"\"name\" \"iPhone Mail\" \"version\" \"17\""#;
    for _ in 0..3 {
        report("0000aaaa", phone);
    }
    for _ in 0..4 {
        report(&fresh_pwhash(), "");
    }
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(
        page.contains(
            "3 failed logins to a***e@example.com over IMAP (iPhone Mail 17): a saved password that is no longer valid"
        ),
        "{page}"
    );
    assert!(page.contains("4 failed logins to a***e@example.com over IMAP</li>"), "{page}");
}

#[test]
fn a_visitors_own_forwarded_header_cannot_make_the_page_act_for_another_address() {
    // nginx's usual setup: it sets X-Forwarded-For and passes the visitor's other headers on.
    let (mw, base) = start("trusted_proxies = [\"127.0.0.1\"]\n", "");
    ban(&mw, "203.0.113.7");
    ban(&mw, "198.51.100.20");
    let visitor = [("Forwarded", "for=203.0.113.7"), ("X-Forwarded-For", "198.51.100.20")];
    let (_, page, _) = get(&format!("{base}/"), &visitor);
    assert!(page.contains("Your address is 198.51.100.20."), "the proxy's header, not the visitor's: {page}");
    let (status, answer) = solve_and_unblock_as(&base, &visitor);
    assert_eq!((status, answer["unblocked"].as_bool()), (200, Some(true)), "{answer}");
    assert_eq!(allow_status(&mw, "198.51.100.20"), 0, "the visitor's own ban is lifted");
    assert_eq!(allow_status(&mw, "203.0.113.7"), -1, "the address it named stays banned");

    // A challenge issued to the visitor is no good for the address it names either.
    ban(&mw, "198.51.100.20");
    let payload = solved_challenge(&base, &visitor);
    let (status, answer) = post_unblock_as(&base, &payload, &[("Forwarded", "for=203.0.113.7")]);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(allow_status(&mw, "203.0.113.7"), -1);
}

#[test]
fn with_proxy_header_forwarded_a_visitors_own_x_forwarded_for_is_ignored() {
    let (mw, base) = start("trusted_proxies = [\"127.0.0.1\"]\nproxy_header = \"Forwarded\"\n", "");
    ban(&mw, "203.0.113.7");
    let visitor = [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=\"198.51.100.20:4711\";proto=https")];
    let (_, page, _) = get(&format!("{base}/"), &visitor);
    assert!(page.contains("Your address is 198.51.100.20.") && page.contains("It is not blocked."), "{page}");
    let (_, page, _) = get(&format!("{base}/"), &[("X-Forwarded-For", "203.0.113.7")]);
    assert!(page.contains("Your address is 127.0.0.1."), "no Forwarded: the proxy itself asks: {page}");
    let (status, _) = solve_and_unblock_as(&base, &[("X-Forwarded-For", "203.0.113.7")]);
    assert_eq!(status, 400, "127.0.0.1 is not banned");
    assert_eq!(allow_status(&mw, "203.0.113.7"), -1);
}

#[test]
fn a_reload_changes_the_believed_header_at_once() {
    let port = free_port();
    let server = |header: &str| {
        format!(
            "public_listen = \"127.0.0.1:{port}\"\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_header = \"{header}\"\n"
        )
    };
    let mut mw = Mailwarden::configure("");
    mw.write_config(&server("x-forwarded-for"), "");
    mw.restart();
    let base = format!("http://127.0.0.1:{port}");
    let headers = [("X-Forwarded-For", "198.51.100.20"), ("Forwarded", "for=203.0.113.7")];
    assert!(get(&format!("{base}/"), &headers).1.contains("Your address is 198.51.100.20."));
    mw.write_config(&server("forwarded"), "");
    let (status, body) = mw.admin_post("/api/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("proxy_header"), "applied, not kept for a restart: {body}");
    assert!(get(&format!("{base}/"), &headers).1.contains("Your address is 203.0.113.7."));
}

#[test]
fn behind_a_chain_of_trusted_proxies_the_right_most_untrusted_address_is_the_visitor() {
    let (mw, base) = start("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n", "");
    ban(&mw, "203.0.113.7");
    // The visitor wrote 203.0.113.7; the edge proxy (10.0.0.5) appended the visitor's real
    // address, the inner one (on loopback) appended the edge proxy's.
    let chain = [("X-Forwarded-For", "203.0.113.7, 198.51.100.20, 10.0.0.5")];
    let (_, page, _) = get(&format!("{base}/"), &chain);
    assert!(page.contains("Your address is 198.51.100.20.") && page.contains("It is not blocked."), "{page}");
    for malformed in ["198.51.100.20, 10.0.0.5:x", "198.51.100.20, unknown, 10.0.0.5", "203.0.113.700"] {
        let (status, body, _) = get(&format!("{base}/"), &[("X-Forwarded-For", malformed)]);
        assert_eq!(status, 400, "{malformed}: refused rather than guessed: {body}");
        assert!(body.contains("x-forwarded-for header from the proxy is not understood"), "{body}");
    }
    let (status, _, _) = get(&format!("{base}/"), &[("X-Forwarded-For", "bogus, 198.51.100.20, 10.0.0.5")]);
    assert_eq!(status, 200, "what the visitor wrote left of its own address is never read");
}

#[test]
fn a_peer_that_is_not_a_trusted_proxy_is_never_believed() {
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let (mw, base) = start(&format!("trusted_proxies = [\"10.0.0.0/8\"]\nproxy_header = \"{header}\"\n"), "");
        ban(&mw, "203.0.113.7");
        let claims =
            [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7"), ("X-Real-IP", "203.0.113.7")];
        let (_, page, _) = get(&format!("{base}/"), &claims);
        assert!(page.contains("Your address is 127.0.0.1.") && page.contains("It is not blocked."), "{header}: {page}");
        let (status, _) = solve_and_unblock_as(&base, &claims);
        assert_eq!(status, 400, "{header}");
        assert_eq!(allow_status(&mw, "203.0.113.7"), -1, "{header}");
    }
}

#[test]
fn a_used_challenge_stays_used_after_a_restart() {
    let (mut mw, base) = start("", "");
    ban(&mw, "127.0.0.1");
    let used = solved_challenge(&base, &[]);
    let unused = solved_challenge(&base, &[]);
    assert_eq!(post_unblock(&base, &used).0, 200);
    mw.kill9();
    mw.restart();
    ban(&mw, "127.0.0.1");
    let (status, answer) = post_unblock(&base, &used);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("already used"), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1);
    let (status, answer) = post_unblock(&base, &unused);
    assert_eq!(status, 200, "a challenge from before the restart is still good once: {answer}");
}

#[test]
fn the_daily_unblock_limit_survives_a_restart() {
    let (mut mw, base) =
        start("", "[self_service]\nmax_unblocks_per_day = 2\nsupport_contact = \"help@example.com\"\n");
    for round in 1..=2 {
        ban(&mw, "127.0.0.1");
        assert_eq!(solve_and_unblock(&base).0, 200, "round {round}");
    }
    mw.kill9();
    mw.restart();
    ban(&mw, "127.0.0.1");
    let (_, page, _) = get(&format!("{base}/"), &[]);
    assert!(page.contains("unblocked 2 times today already. Please contact help@example.com."), "{page}");
    let (status, answer) = solve_and_unblock(&base);
    assert_eq!((status, answer["unblocked"].as_bool()), (429, Some(false)), "{answer}");
    assert_eq!(allow_status(&mw, "127.0.0.1"), -1);
}

#[test]
fn an_ipv6_visitor_cannot_escape_the_daily_limit_by_changing_address_within_the_64() {
    let (mw, base) = start("trusted_proxies = [\"127.0.0.1/32\"]\n", "[self_service]\nmax_unblocks_per_day = 1\n");
    let from = |address: &'static str| [("X-Forwarded-For", address)];
    ban(&mw, "2001:db8::1");
    // A challenge is the source's: fetched from one address, good from another of the /64.
    let payload = solved_challenge(&base, &from("2001:db8::1"));
    let (status, answer) = post_unblock_as(&base, &payload, &from("2001:db8::2"));
    assert_eq!(status, 200, "{answer}");
    ban(&mw, "2001:db8::3");
    let (_, page, _) = get(&format!("{base}/"), &from("2001:db8::4"));
    assert!(page.contains("Your address is 2001:db8::4.") && page.contains("unblocked 1 times today"), "{page}");
    let (status, answer) = solve_and_unblock_as(&base, &from("2001:db8::5"));
    assert_eq!((status, answer["unblocked"].as_bool()), (429, Some(false)), "{answer}");
    assert_eq!(allow_status(&mw, "2001:db8::6"), -1, "the /64 stays banned");
    let (_, page, _) = get(&format!("{base}/"), &from("2001:db8:0:1::1"));
    assert!(page.contains("It is not blocked."), "the next /64 is another source: {page}");
}

#[test]
fn an_ipv6_visitor_cannot_escape_the_page_rate_limit_by_changing_address_within_the_64() {
    let (_mw, base) = start("trusted_proxies = [\"127.0.0.1/32\"]\n", "[self_service]\nmax_requests_per_minute = 5\n");
    for i in 1..=5 {
        let address = format!("2001:db8::{i}");
        assert_eq!(get(&format!("{base}/"), &[("X-Forwarded-For", &address)]).0, 200, "request {i}");
    }
    let (status, _, _) = get(&format!("{base}/"), &[("X-Forwarded-For", "2001:db8::ffff")]);
    assert_eq!(status, 429, "a sixth address of the same /64");
    let (status, _, _) = get(&format!("{base}/"), &[("X-Forwarded-For", "2001:db8:0:1::1")]);
    assert_eq!(status, 200, "another /64 is not held back");
}

/// A node on `redis` (prefix `prefix`) with its page on a free port.
fn cluster_node(redis: &RedisServer, prefix: &str, extra: &str) -> (Mailwarden, String) {
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = {:?}\nprefix = {prefix:?}\nrefresh_every = \"30s\"\n",
        redis.url()
    );
    start("", &format!("{store}{extra}"))
}

#[test]
fn two_nodes_of_a_cluster_share_the_daily_unblock_limit_and_used_challenges() {
    let Some(mut redis) = RedisServer::start() else { return };
    let limit = "[self_service]\nmax_unblocks_per_day = 2\nsupport_contact = \"help@example.com\"\n";
    let (a, page_a) = cluster_node(&redis, "mwss:", limit);
    let (b, page_b) = cluster_node(&redis, "mwss:", limit);
    let banned_everywhere = || {
        ban(&a, "127.0.0.1");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while allow_status(&b, "127.0.0.1") != -1 {
            assert!(std::time::Instant::now() < deadline, "B did not adopt A's ban");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    banned_everywhere();
    // A challenge from A is good on B (one key), and once used there it is used on A too.
    let payload = solved_challenge(&page_a, &[]);
    assert_eq!(post_unblock(&page_b, &payload).0, 200, "A's challenge, solved, unblocks on B");
    banned_everywhere();
    let (status, answer) = post_unblock(&page_a, &payload);
    assert!(status == 400 && answer["message"].as_str().unwrap().contains("already used"), "{status} {answer}");

    assert_eq!(solve_and_unblock(&page_a).0, 200, "the second of the day, on A");
    banned_everywhere();
    let (_, page, _) = get(&format!("{page_b}/"), &[]);
    assert!(page.contains("unblocked 2 times today already"), "B counts A's unblocks: {page}");
    assert_eq!(solve_and_unblock(&page_b).0, 429);
    assert_eq!(solve_and_unblock(&page_a).0, 429);
    assert_eq!(allow_status(&a, "127.0.0.1"), -1);

    // Without Redis no node can check the count: nothing is unblocked.
    let (c, page_c) = cluster_node(&redis, "mwss-other:", "");
    ban(&c, "127.0.0.1");
    let payload = solved_challenge(&page_c, &[]);
    redis.stop();
    let (status, answer) = post_unblock(&page_c, &payload);
    assert_eq!(status, 503, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("Unblocking is not possible at the moment"), "{answer}");
    let (_, page, _) = get(&format!("{page_c}/"), &[]);
    assert!(page.contains("Unblocking is not possible at the moment") && !page.contains("<button"), "{page}");
    let (status, answer, _) = get(&format!("{page_c}/challenge"), &[]);
    assert!(status == 503 && answer.contains("Unblocking is not possible at the moment"), "{status} {answer}");
    assert_eq!(allow_status(&c, "127.0.0.1"), -1, "still banned");
}

#[test]
fn a_proxy_header_that_is_no_header_name_is_refused_with_its_key() {
    let mw = Mailwarden::configure("");
    mw.write_config("proxy_header = \"X Forwarded For\"\n", "");
    let check = mw.cli(&["check-config"]);
    assert_eq!(check.status.code(), Some(2));
    let text = String::from_utf8_lossy(&check.stderr);
    assert!(text.contains("server.proxy_header: \"X Forwarded For\" is not a header name"), "{text}");
    mw.write_config("proxy_header = \"X-Real-IP\"\n", "");
    assert!(mw.cli(&["check-config"]).status.success(), "any header name, in any case");
}

#[test]
fn a_self_unblock_is_announced_to_the_webhooks_as_an_unblock_and_a_lifted_ban() {
    let secret = "selfservice-secret-0123";
    let receiver = support::webhook_receiver::Receiver::start(0, secret, 0);
    let endpoint = format!(
        "[webhooks.siem]\nurl = \"{}\"\nsecret = \"{secret}\"\nevents = [\"self_unblock\", \"ban_lifted\"]\n",
        receiver.url()
    );
    let (mw, base) = start("", &endpoint);
    ban(&mw, "127.0.0.1");
    let (status, answer) = solve_and_unblock(&base);
    assert_eq!(status, 200, "{answer}");
    let received = receiver.wait_until(std::time::Duration::from_secs(10), |got| got.len() >= 2);
    assert!(received.iter().all(|r| r.verified && r.body["facts"]["source"] == "127.0.0.1"), "{received:#?}");
    let unblock = received.iter().find(|r| r.kind() == "self_unblock").expect("a self_unblock notice");
    assert_eq!(unblock.body["actor"], Value::Null);
    let lifted = received.iter().find(|r| r.kind() == "ban_lifted").expect("a ban_lifted notice");
    assert_eq!(lifted.body["facts"]["cause"], "self_service");
}
