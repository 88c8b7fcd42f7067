//! Enforcement at the host firewall, for real: mailwarden programs nftables inside a network
//! namespace this test creates, and TCP clients bound to 127.0.0.x inside it find out whether
//! they can still connect to a guarded port.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::mailwarden::{Mailwarden, fresh_pwhash, report_body};
use support::netns::Netns;
use support::redis::RedisServer;

const TABLE: &str = "mwtest";
const MAX_FAILURES: usize = 3;

/// Whether a TCP connection from `from` to `port` on 127.0.0.1 opens within a second (a
/// dropped SYN is never answered).
fn can_connect(from: &str, port: u16) -> bool {
    let from: Ipv4Addr = from.parse().expect("an address");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::from((from, 0)).into()).expect("bind the client");
    socket.connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(), Duration::from_secs(1)).is_ok()
}

/// Waits up to five seconds for `from`'s connectivity to become `expected`.
fn wait_until_connect_is(from: &str, port: u16, expected: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while can_connect(from, port) != expected {
        assert!(
            Instant::now() < deadline,
            "{from} still {}connects to port {port}",
            if expected { "never " } else { "" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A guarded port with a listener that takes every connection.
fn listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    port
}

fn ban_through_reports(mw: &Mailwarden, remote: &str) {
    for _ in 0..MAX_FAILURES {
        let (status, _) = mw.policy("report", &report_body(remote, "alice@example.com", &fresh_pwhash(), false));
        assert_eq!(status, 200);
    }
    let (status, body) = mw.admin("GET", &format!("/api/v1/bans/{remote}"));
    assert_eq!(status, 200, "{remote} was not banned: {body}");
}

/// The element of `address` in the banned IPv4 set: its timeout and what is left of it, in seconds.
fn element(netns: &Netns, address: &str) -> Option<(u64, u64)> {
    let listing: serde_json::Value =
        serde_json::from_str(&netns.nft(&["-j", "list", "set", "inet", TABLE, "banned_ipv4"])).expect("nft's JSON");
    let set = listing["nftables"].as_array()?.iter().find_map(|item| item.get("set"))?;
    set["elem"].as_array()?.iter().find_map(|elem| {
        let elem = &elem["elem"];
        (elem["val"] == address).then(|| (elem["timeout"].as_u64().unwrap_or(0), elem["expires"].as_u64().unwrap_or(0)))
    })
}

/// mailwarden with enforcement on, in a namespace of its own, guarding a listener's port.
/// The namespace is gone once both it and the server are dropped, whichever goes first.
struct Guarded {
    mw: Mailwarden,
    port: u16,
    netns: Netns,
}

/// `extra` goes before the `[nftables]` section, which guards the port and resyncs every
/// `resync_every`. `None` when the machine cannot have a namespace (outside CI).
fn start_in_namespace(name: &str, extra: &str, resync_every: &str) -> Option<Guarded> {
    let netns = Netns::enter(&format!("mw-nft-{name}-{}", std::process::id()))?;
    let port = listener();
    let mw = Mailwarden::start_with(&format!(
        "[autoban]\nmax_failures = {MAX_FAILURES}\n{extra}\n{}",
        nftables_toml(TABLE, port, resync_every)
    ));
    Some(Guarded { mw, port, netns })
}

/// The `[nftables]` section guarding `port` with `table`.
fn nftables_toml(table: &str, port: u16, resync_every: &str) -> String {
    format!(
        "[nftables]\nenabled = true\ntable = \"{table}\"\nports = [\"{port}\"]\nresync_every = \"{resync_every}\"\n"
    )
}

#[test]
fn a_banned_address_is_dropped_at_the_firewall_until_unbanned_and_a_restart_recreates_the_set() {
    let extra = "ban_for = \"10m\"
subnet_bans = 0

[networks]
trusted = [\"127.0.0.9\"]
";
    let Some(Guarded { mut mw, port, netns }) = start_in_namespace("enforce", extra, "1h") else {
        return;
    };
    for address in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.9", "127.0.0.10"] {
        assert!(can_connect(address, port), "{address} cannot connect before any ban");
    }

    ban_through_reports(&mw, "127.0.0.2");
    wait_until_connect_is("127.0.0.2", port, false);
    assert!(can_connect("127.0.0.3", port), "an address nobody banned is dropped too");

    let (_, ban) = mw.admin("GET", "/api/v1/bans/127.0.0.2");
    let ban: serde_json::Value = serde_json::from_str(&ban).expect("a ban");
    let remaining = ban["remaining_seconds"].as_u64().expect("remaining_seconds");
    let (timeout, expires) = element(&netns, "127.0.0.2").expect("the ban's element in the set");
    assert!(timeout <= 600 && timeout >= 590, "the element's timeout {timeout}s is not the ban's 10 minutes");
    assert!(expires.abs_diff(remaining) <= 2, "the element ends in {expires}s, the ban in {remaining}s");

    // A blocked network holding a trusted address: the network is dropped, the trusted address never.
    let (status, body) = mw.admin_post("/api/v1/blocks", Some(r#"{"network":"127.0.0.8/29"}"#));
    assert_eq!(status, 201, "{body}");
    wait_until_connect_is("127.0.0.10", port, false);
    assert!(can_connect("127.0.0.9", port), "a trusted address inside a blocked network was dropped");
    ban_through_reports(&mw, "127.0.0.4");
    wait_until_connect_is("127.0.0.4", port, false);

    // An IPv6 source is banned as its /64, which the IPv6 set holds as a network.
    ban_through_reports(&mw, "2001:db8:1:2::7");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns.nft(&["list", "set", "inet", TABLE, "banned_ipv6"]).contains("2001:db8:1:2::/64 timeout") {
        assert!(Instant::now() < deadline, "the IPv6 ban never reached the set");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (status, list) = mw.admin("GET", "/api/v1/bans.txt");
    assert_eq!(status, 200);
    assert_eq!(list, "127.0.0.2\n127.0.0.4\n127.0.0.8/29\n2001:db8:1:2::/64\n");

    let (status, body) = mw.admin("DELETE", "/api/v1/bans/127.0.0.2");
    assert_eq!(status, 200, "{body}");
    wait_until_connect_is("127.0.0.2", port, true);
    assert!(!can_connect("127.0.0.4", port), "lifting one ban lifted another");

    // Stopped, its table flushed away by hand: the ban is no longer enforced, until the
    // restart recreates the set from the stored bans.
    mw.kill9();
    netns.nft(&["delete", "table", "inet", TABLE]);
    assert!(can_connect("127.0.0.4", port), "the table was deleted, yet 127.0.0.4 is dropped");
    mw.restart();
    wait_until_connect_is("127.0.0.4", port, false);
    assert!(can_connect("127.0.0.2", port), "the lifted ban came back with the restart");
    assert!(can_connect("127.0.0.9", port), "the trusted address is dropped after the restart");
    assert!(!can_connect("127.0.0.10", port), "the blocked network is not enforced after the restart");
}

#[test]
fn a_lengthened_ban_is_held_by_the_firewall_until_its_new_end() {
    let Some(Guarded { mw, port, netns }) = start_in_namespace("lengthen", "ban_for = \"10m\"", "1h") else {
        return;
    };
    ban_through_reports(&mw, "127.0.0.6");
    wait_until_connect_is("127.0.0.6", port, false);
    let (status, body) = mw.admin_post("/api/v1/bans/127.0.0.6/lengthen", Some(r#"{"by":"2h"}"#));
    assert_eq!(status, 200, "{body}");
    let remaining = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["lengthened"]["remaining_seconds"]
        .as_u64()
        .expect("remaining_seconds");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match element(&netns, "127.0.0.6") {
            Some((_, expires)) if expires.abs_diff(remaining) <= 2 => break,
            other => assert!(Instant::now() < deadline, "the set still holds {other:?}, not {remaining}s"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!can_connect("127.0.0.6", port), "still dropped");
}

#[test]
fn a_table_deleted_by_hand_is_recreated_by_the_next_resync_with_the_bans_in_force() {
    let Some(Guarded { mw, port, netns }) = start_in_namespace("resync", "", "1s") else {
        return;
    };
    ban_through_reports(&mw, "127.0.0.5");
    wait_until_connect_is("127.0.0.5", port, false);
    netns.nft(&["delete", "table", "inet", TABLE]);
    assert!(can_connect("127.0.0.5", port), "the table is gone, yet 127.0.0.5 is dropped");
    wait_until_connect_is("127.0.0.5", port, false);
    assert!(can_connect("127.0.0.6", port));
    let (_, metrics) = mw.admin("GET", "/metrics");
    assert!(metrics.contains("mailwarden_nftables_batches_total{result=\"failure\"} 0"), "{metrics}");
}

#[test]
fn a_batch_the_kernel_refuses_is_counted_and_retried_by_recreating_the_table() {
    let Some(Guarded { mw, port, netns }) = start_in_namespace("retry", "", "1h") else {
        return;
    };
    ban_through_reports(&mw, "127.0.0.5");
    wait_until_connect_is("127.0.0.5", port, false);
    // With the table gone, adding the next ban's element fails; the retry recreates the table
    // with both bans, long before the hourly resync.
    netns.nft(&["delete", "table", "inet", TABLE]);
    ban_through_reports(&mw, "127.0.0.6");
    wait_until_connect_is("127.0.0.6", port, false);
    assert!(!can_connect("127.0.0.5", port), "the retry left out the first ban");
    assert!(can_connect("127.0.0.7", port));
    let (_, metrics) = mw.admin("GET", "/metrics");
    assert!(metrics.contains("mailwarden_nftables_batches_total{result=\"failure\"} 1"), "{metrics}");
    assert!(mw.log().contains("could not update the nftables sets"), "{}", mw.log());
}

#[test]
fn in_cluster_mode_each_node_programs_its_own_table_with_the_bans_another_node_placed() {
    let Some(netns) = Netns::enter(&format!("mw-nft-cluster-{}", std::process::id())) else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let port = listener();
    let node = |table: &str| {
        Mailwarden::start_with(&format!(
            "[store]\nbackend = \"redis\"\nurl = {:?}\nprefix = \"mwnft:\"\n\n\
             [autoban]\nmax_failures = {MAX_FAILURES}\n\n{}",
            redis.url(),
            nftables_toml(table, port, "1h")
        ))
    };
    let (first, second) = (node("mwfirst"), node("mwsecond"));
    ban_through_reports(&first, "127.0.0.5");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !netns.nft(&["list", "set", "inet", "mwsecond", "banned_ipv4"]).contains("127.0.0.5 timeout") {
        assert!(Instant::now() < deadline, "the second node never dropped the first node's ban");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = second.admin("DELETE", "/api/v1/bans/127.0.0.5");
    assert_eq!(status, 200, "{body}");
    wait_until_connect_is("127.0.0.5", port, true);
    assert!(!netns.nft(&["list", "set", "inet", "mwfirst", "banned_ipv4"]).contains("127.0.0.5"));
}

#[test]
fn a_start_with_nftables_enabled_but_no_nft_fails_naming_the_key() {
    let mw = Mailwarden::configure("[nftables]\nenabled = true\n");
    let out = Command::new(env!("CARGO_BIN_EXE_mailwarden"))
        .arg("--config")
        .arg(&mw.config_path)
        .env("PATH", mw.dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run mailwarden");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without nft: {stderr}");
    assert!(stderr.contains("nftables.enabled") && stderr.contains("nftables package"), "{stderr}");
}
