//! Cluster mode against real Redis: two mailwarden nodes (the real binary) sharing one
//! redis-server, or a three-master Redis Cluster, on loopback ports. Failures counted on one
//! node ban everywhere, admin changes on one apply on the other, a restarted node sees
//! everything at once, and when Redis stops the nodes keep answering from memory and catch up
//! when it is back.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::mailwarden::{Mailwarden, fresh_pwhash, login_body, report_body};
use support::redis::{Persistence, RedisCluster, RedisServer};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn store_toml(urls: &[String], cluster: bool) -> String {
    let target = if cluster {
        let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        format!("cluster_urls = [{}]", list.join(", "))
    } else {
        format!("url = {:?}", urls[0])
    };
    format!("[store]\nbackend = \"redis\"\n{target}\nprefix = \"mwtest:\"\nrefresh_every = \"30s\"\n")
}

fn node(urls: &[String], cluster: bool) -> Mailwarden {
    Mailwarden::start_with(&store_toml(urls, cluster))
}

fn status(mw: &Mailwarden, remote: &str, login: &str) -> i64 {
    let (code, body) = mw.policy("allow", &login_body(remote, login, &fresh_pwhash()));
    assert_eq!(code, 200, "{body}");
    json(&body)["status"].as_i64().unwrap_or_else(|| panic!("no status: {body}"))
}

fn fail(mw: &Mailwarden, remote: &str, login: &str) {
    let (code, body) = mw.policy("report", &report_body(remote, login, &fresh_pwhash(), false));
    assert_eq!(code, 200, "{body}");
}

/// Waits up to `limit` for `check`; returns how long it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn health(mw: &Mailwarden) -> Value {
    let (code, body) = mw.admin("GET", "/healthz");
    assert_eq!(code, 200, "{body}");
    json(&body)
}

/// The behaviours both topologies must show, on two fresh nodes.
fn two_nodes_share_bans_unbans_lists_and_rules(a: &Mailwarden, b: &mut Mailwarden) {
    // Three distinct wrong passwords on A and two on B: five in the cluster, a ban everywhere.
    let attacker = "203.0.113.9";
    for i in 0..3 {
        fail(a, attacker, &format!("user{i}@example.com"));
    }
    for i in 3..5 {
        fail(b, attacker, &format!("user{i}@example.com"));
    }
    within(Duration::from_secs(5), "B refuses the source counted across nodes", || {
        status(b, attacker, "someone@example.com") == -1
    });
    within(Duration::from_secs(5), "A refuses it too", || status(a, attacker, "someone@example.com") == -1);
    let ban = json(&a.admin("GET", &format!("/api/v1/bans/{attacker}")).1);
    assert_eq!(ban["failures"], 5, "{ban}");

    // An unban through B lifts it on A within a second.
    let (code, body) = b.admin("DELETE", &format!("/api/v1/bans/{attacker}"));
    assert_eq!(code, 200, "{body}");
    let took = within(Duration::from_secs(1), "A lifts the ban B lifted", || status(a, attacker, "x@example.com") == 0);
    eprintln!("unban reached the other node in {took:?}");

    // Alice logging in on B forgives her guesses counted on A, cluster-wide. Her success also
    // earns the office 2 guesses of tolerance on B (5 + 2): with her 2 guesses still counted,
    // Bob's 2 and Carol's 3 would make 7 and a ban.
    let office = "203.0.113.60";
    for login in ["alice@example.com", "alice@example.com", "bob@example.com", "bob@example.com"] {
        fail(a, office, login);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = b.policy("report", &report_body(office, "alice@example.com", &fresh_pwhash(), true));
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        fail(b, office, "carol@example.com");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(b, office, "someone@example.com"), 0, "alice's guesses were forgiven everywhere");
    assert_eq!(status(a, office, "someone@example.com"), 0);
    // The count is live: Dave's 2 make 7.
    for _ in 0..2 {
        fail(b, office, "dave@example.com");
    }
    within(Duration::from_secs(5), "B bans the office at 7 distinct guesses", || {
        status(b, office, "someone@example.com") == -1
    });

    // A firewall rule and a block-list entry added through A apply on B.
    let (code, body) = a.admin_post(
        "/api/v1/mailboxes/alice@example.com/firewall/rules",
        Some(r#"{"action":"block","network":"198.51.100.0/24"}"#),
    );
    assert_eq!(code, 201, "{body}");
    within(Duration::from_secs(1), "B applies A's rule", || {
        let body = b.policy("allow", &login_body("198.51.100.5", "alice@example.com", &fresh_pwhash())).1;
        json(&body)["msg"].as_str().is_some_and(|m| m.contains("email firewall rule no. 1"))
    });
    assert_eq!(status(b, "198.51.100.5", "bob@example.com"), 0, "the rule is alice's alone");
    let (code, body) =
        a.admin_post("/api/v1/blocks", Some(r#"{"network":"192.0.2.0/24","comment":"abuse desk ticket 7"}"#));
    assert_eq!(code, 201, "{body}");
    within(Duration::from_secs(1), "B applies A's block", || status(b, "192.0.2.44", "bob@example.com") == -1);
    // The block log is one for the cluster: B's refusal is in A's answer once B's writer has
    // stored it (it gathers records for 50 ms).
    within(Duration::from_secs(2), "B's refusal in A's block log", || {
        json(&a.admin("GET", "/api/v1/events?ip=192.0.2.44").1)["events"][0]["reason"] == "blocked"
    });

    // A restarted node sees every ban and rule at once.
    for i in 0..5 {
        fail(a, "203.0.113.77", &format!("user{i}@example.com"));
    }
    within(Duration::from_secs(5), "A bans", || status(a, "203.0.113.77", "x@example.com") == -1);
    b.restart();
    assert_eq!(status(b, "203.0.113.77", "x@example.com"), -1, "the ban, right after the restart");
    assert_eq!(status(b, "192.0.2.44", "bob@example.com"), -1, "the block, right after the restart");
    assert_eq!(status(b, "198.51.100.5", "alice@example.com"), -1, "the rule, right after the restart");
    assert_eq!(health(b)["store"], "redis");
}

#[test]
fn two_nodes_on_one_redis_share_counts_bans_lists_and_rules() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let a = node(&urls, false);
    let mut b = node(&urls, false);
    two_nodes_share_bans_unbans_lists_and_rules(&a, &mut b);
}

#[test]
fn two_nodes_on_a_three_master_redis_cluster_share_counts_bans_lists_and_rules() {
    let Some(cluster) = RedisCluster::start(3) else { return };
    let urls = cluster.urls();
    let a = node(&urls, true);
    let mut b = node(&urls, true);
    two_nodes_share_bans_unbans_lists_and_rules(&a, &mut b);
}

#[test]
fn with_redis_stopped_nodes_answer_from_memory_and_catch_up_when_it_returns() {
    let Some(mut redis) = RedisServer::start_with(Persistence::AppendOnly) else { return };
    let urls = vec![redis.url()];
    let a = node(&urls, false);
    let b = node(&urls, false);
    for i in 0..5 {
        fail(&a, "203.0.113.50", &format!("user{i}@example.com"));
    }
    within(Duration::from_secs(5), "B knows the ban", || status(&b, "203.0.113.50", "x@example.com") == -1);

    redis.stop();
    within(Duration::from_secs(5), "A reports itself degraded", || health(&a)["status"] == "degraded");
    // Every request is answered well inside Dovecot's patience, known bans still hold, and
    // each node still counts failures by itself.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let start = Instant::now();
        assert_eq!(status(&b, "203.0.113.50", "x@example.com"), -1, "a known ban holds");
        assert_eq!(status(&a, &format!("198.18.0.{i}"), "x@example.com"), 0);
        fail(&a, "203.0.113.60", &format!("user{}@example.com", i % 5));
        slowest = slowest.max(start.elapsed());
    }
    eprintln!("slowest round of allow, allow and report with Redis down: {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "answers must not wait for Redis: {slowest:?}");
    assert_eq!(status(&a, "203.0.113.60", "x@example.com"), -1, "A banned on its own count");
    assert!(a.log().matches("unreachable").count() <= 3, "logged once per change of state:\n{}", a.log());

    redis.restart();
    within(Duration::from_secs(10), "A is healthy again", || health(&a)["status"] == "ok");
    within(Duration::from_secs(10), "B learns the ban A placed during the outage", || {
        status(&b, "203.0.113.60", "x@example.com") == -1
    });
    let (code, body) = b.admin("DELETE", "/api/v1/bans/203.0.113.50");
    assert_eq!(code, 200, "{body}");
    within(Duration::from_secs(1), "A lifts B's unban", || status(&a, "203.0.113.50", "x@example.com") == 0);
    let metrics = a.admin("GET", "/metrics").1;
    assert!(metrics.contains("mailwarden_store_up 1"), "{metrics}");
}

#[test]
fn a_redis_that_comes_back_empty_gets_the_nodes_state_back() {
    let Some(mut redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let a = node(&urls, false);
    for i in 0..5 {
        fail(&a, "203.0.113.90", &format!("user{i}@example.com"));
    }
    within(Duration::from_secs(5), "A bans", || status(&a, "203.0.113.90", "x@example.com") == -1);
    let (code, body) = a.admin_post("/api/v1/blocks", Some(r#"{"network":"192.0.2.0/24"}"#));
    assert_eq!(code, 201, "{body}");

    // Without persistence, a restarted redis-server holds nothing.
    redis.stop();
    within(Duration::from_secs(5), "A notices", || health(&a)["status"] == "degraded");
    redis.restart();
    within(Duration::from_secs(10), "A is healthy again", || health(&a)["status"] == "ok");
    let c = node(&urls, false);
    within(Duration::from_secs(5), "a new node sees the ban A put back", || {
        status(&c, "203.0.113.90", "x@example.com") == -1
    });
    assert_eq!(status(&c, "192.0.2.9", "x@example.com"), -1, "and the block");
    // The restarted Redis has forgotten the counting scripts too: they are loaded again.
    for i in 0..3 {
        fail(&a, "203.0.113.91", &format!("user{i}@example.com"));
    }
    for i in 3..5 {
        fail(&c, "203.0.113.91", &format!("user{i}@example.com"));
    }
    within(Duration::from_secs(5), "counting across nodes works again", || {
        status(&c, "203.0.113.91", "x@example.com") == -1 && status(&a, "203.0.113.91", "x@example.com") == -1
    });
}

#[test]
fn with_redis_hung_logins_are_answered_at_once_and_bans_still_placed() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let a = node(&urls, false);
    let b = node(&urls, false);
    redis.pause();
    // Nothing answers, yet the kernel accepts connections: each Redis call runs into the
    // 50 ms budget (once; then the node stops trying until a probe succeeds).
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        for node in [&a, &b] {
            let start = Instant::now();
            assert_eq!(status(node, &format!("198.18.1.{i}"), "x@example.com"), 0);
            fail(node, "203.0.113.70", &format!("user{i}@example.com"));
            slowest = slowest.max(start.elapsed());
        }
    }
    eprintln!("slowest allow and report with Redis hung: {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "answers must not wait on a hung Redis: {slowest:?}");
    assert_eq!(status(&a, "203.0.113.70", "x@example.com"), -1, "A banned on its own count");
    assert_eq!(status(&b, "203.0.113.70", "x@example.com"), -1, "and so did B");
    within(Duration::from_secs(5), "A reports itself degraded", || health(&a)["status"] == "degraded");

    redis.resume();
    within(Duration::from_secs(10), "A is healthy again", || health(&a)["status"] == "ok");
    // B too, before A's unban is timed: on a loaded machine B could still be reconnecting.
    within(Duration::from_secs(10), "B is healthy again", || health(&b)["status"] == "ok");
    let (code, body) = a.admin("DELETE", "/api/v1/bans/203.0.113.70");
    assert_eq!(code, 200, "{body}");
    within(Duration::from_secs(1), "B lifts A's unban", || status(&b, "203.0.113.70", "x@example.com") == 0);
}

#[test]
fn on_store_error_reject_refuses_untrusted_logins_while_redis_is_down() {
    let Some(mut redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let extra = format!(
        "{}on_store_error = \"reject\"\n\n[networks]\ntrusted = [\"10.20.0.0/16\"]\n",
        store_toml(&urls, false)
    );
    let a = Mailwarden::start_with(&extra);
    assert_eq!(status(&a, "198.51.100.20", "x@example.com"), 0);
    redis.stop();
    within(Duration::from_secs(5), "A refuses while Redis is down", || {
        let body = a.policy("allow", &login_body("198.51.100.20", "x@example.com", &fresh_pwhash())).1;
        json(&body)["msg"].as_str().is_some_and(|m| m.starts_with("Logins are paused for a few minutes"))
    });
    assert_eq!(status(&a, "10.20.3.4", "x@example.com"), 0, "trusted networks still log in");
    let why = json(&a.admin("GET", "/api/v1/why?ip=198.51.100.20").1);
    assert!(
        why["decision"]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused: the shared store (Redis) is unreachable")),
        "{why}"
    );
    redis.restart();
    within(Duration::from_secs(10), "A allows again once Redis is back", || {
        status(&a, "198.51.100.20", "x@example.com") == 0
    });
}

#[test]
fn a_reset_login_on_one_node_ends_the_logins_quarantine_and_forgives_its_guesses_on_every_node() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let a = node(&urls, false);
    let b = node(&urls, false);
    let home = "198.51.100.40";
    let stale = |mw: &Mailwarden| {
        let (code, body) = mw.policy("allow", &login_body(home, "alice@example.com", "0ld0"));
        assert_eq!(code, 200, "{body}");
        json(&body)["status"].as_i64().unwrap_or_default()
    };
    for _ in 0..3 {
        assert_eq!(a.policy("report", &report_body(home, "alice@example.com", "0ld0", false)).0, 200);
    }
    within(Duration::from_secs(5), "B learns the quarantine counted on A", || stale(&b) == -1);

    let (code, body) = a.admin_post("/api/v1/logins/alice@example.com/reset", None);
    assert_eq!(code, 200, "{body}");
    within(Duration::from_secs(5), "the quarantine ends on B too", || stale(&b) == 0);
    assert_eq!(stale(&a), 0);
    // The old guess no longer counts anywhere: four new wrong passwords from home, counted
    // across both nodes, do not ban it.
    for i in 0..2 {
        fail(&a, home, &format!("typo{i}@example.com"));
        fail(&b, home, &format!("typo{}@example.com", i + 2));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&a, home, "dave@example.com"), 0);
    assert_eq!(status(&b, home, "dave@example.com"), 0);
}

#[test]
fn a_login_refused_on_an_office_is_refused_by_every_node_and_lifting_it_on_one_lifts_it_everywhere() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let (a, b) = (node(&urls, false), node(&urls, false));
    let office = "198.51.100.60";
    for mw in [&a, &b] {
        for n in 0..3 {
            let (code, body) =
                mw.policy("report", &report_body(office, &format!("colleague{n}@example.com"), "00900d", true));
            assert_eq!(code, 200, "{body}");
        }
    }
    // Five distinct wrong passwords for alice, three on A and two on B: alice alone is refused.
    for _ in 0..3 {
        fail(&a, office, "alice@example.com");
    }
    for _ in 0..2 {
        fail(&b, office, "alice@example.com");
    }
    for (name, mw) in [("A", &a), ("B", &b)] {
        within(Duration::from_secs(5), &format!("{name} refuses alice from the office"), || {
            status(mw, office, "alice@example.com") == -1
        });
        assert_eq!(status(mw, office, "colleague1@example.com"), 0, "{name}: colleagues still log in");
    }
    let listed = json(&a.admin("GET", "/api/v1/bans").1);
    assert_eq!(
        (listed["total"].as_u64(), listed["bans"][0]["login"].as_str()),
        (Some(1), Some("alice@example.com")),
        "{listed}"
    );

    let (code, body) = b.admin("DELETE", &format!("/api/v1/bans/{office}?login=alice@example.com"));
    assert_eq!(code, 200, "{body}");
    within(Duration::from_secs(1), "A lifts the refusal B lifted", || status(&a, office, "alice@example.com") == 0);
    assert_eq!(json(&a.admin("GET", "/api/v1/bans").1)["total"], 0);
}

#[test]
fn a_token_created_on_one_node_works_on_the_other_and_its_revocation_holds_there_at_once() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let a = node(&urls, false);
    let b = node(&urls, false);
    let token = a.create_token("desk", "support");
    within(Duration::from_secs(5), "B accepts the token made on A", || {
        b.admin_as(&token, "GET", "/api/v1/bans", None).0 == 200
    });
    assert_eq!(b.admin_as(&token, "POST", "/api/v1/reload", None).0, 403, "with A's scope");
    let (code, body) = a.admin("DELETE", "/api/v1/tokens/desk");
    assert_eq!(code, 200, "{body}");
    let took = within(Duration::from_secs(1), "B refuses the revoked token", || {
        b.admin_as(&token, "GET", "/api/v1/bans", None).0 == 401
    });
    eprintln!("revocation reached the other node in {took:?}");
    let audit = json(&b.admin("GET", "/api/v1/audit?action=token_revoked").1);
    assert_eq!(audit["records"][0]["target"], "desk", "one audit trail for the cluster: {audit}");
}

#[test]
fn each_node_announces_to_its_webhooks_only_what_it_did_itself() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let secret = "cluster-webhook-secret-0123";
    let receivers = [
        support::webhook_receiver::Receiver::start(0, secret, 0),
        support::webhook_receiver::Receiver::start(0, secret, 0),
    ];
    let with_endpoint = |receiver: &support::webhook_receiver::Receiver| {
        let endpoint = format!(
            "[webhooks.siem]\nurl = \"{}\"\nsecret = \"{secret}\"\nevents = [\"ban_placed\", \"ban_lifted\"]\n",
            receiver.url()
        );
        Mailwarden::start_with(&format!("{}\n{endpoint}", store_toml(&urls, false)))
    };
    let (a, b) = (with_endpoint(&receivers[0]), with_endpoint(&receivers[1]));
    for _ in 0..5 {
        fail(&a, "127.0.0.20", "alice@example.com");
    }
    within(Duration::from_secs(5), "node b adopts the ban", || status(&b, "127.0.0.20", "alice@example.com") == -1);
    assert_eq!(b.admin("DELETE", "/api/v1/bans/127.0.0.20").0, 200);
    let kinds = |receiver: &support::webhook_receiver::Receiver| {
        receiver.received().iter().map(|r| r.kind().to_string()).collect::<Vec<_>>()
    };
    receivers[0].wait_until(Duration::from_secs(10), |got| !got.is_empty());
    receivers[1].wait_until(Duration::from_secs(10), |got| !got.is_empty());
    // Time for a notice announced twice to arrive.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(kinds(&receivers[0]), ["ban_placed"], "node a placed the ban and did not lift it");
    assert_eq!(kinds(&receivers[1]), ["ban_lifted"], "node b lifted the ban it had adopted");
}

#[test]
fn a_ban_lengthened_on_one_node_ends_later_on_every_node() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = vec![redis.url()];
    let (a, mut b) = (node(&urls, false), node(&urls, false));
    let attacker = "203.0.113.50";
    for i in 0..5 {
        fail(&a, attacker, &format!("user{i}@example.com"));
    }
    within(Duration::from_secs(5), "B refuses the source A banned", || status(&b, attacker, "x@example.com") == -1);
    let ends = |mw: &Mailwarden| json(&mw.admin("GET", &format!("/api/v1/bans/{attacker}")).1)["expires_at"].clone();
    let before = ends(&a);
    let (code, body) = b.admin_post(&format!("/api/v1/bans/{attacker}/lengthen"), Some(r#"{"by":"3h"}"#));
    assert_eq!(code, 200, "{body}");
    let lengthened = json(&body)["lengthened"]["expires_at"].clone();
    assert_ne!(lengthened, before);
    let took = within(Duration::from_secs(1), "A has the end B gave the ban", || ends(&a) == lengthened);
    eprintln!("the lengthened ban reached the other node in {took:?}");
    b.restart();
    assert_eq!(ends(&b), lengthened, "Redis kept the new end");
}
