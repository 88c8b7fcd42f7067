//! The text of `nft -f -` batches, pure: the whole table (created afresh), a refill of its
//! sets, and additions. Each batch is one kernel transaction: it applies whole or not at all.

use std::fmt::Write as _;
use std::time::Duration;

use ipnet::IpNet;

use super::NftablesSettings;
use super::sets::Sets;
use crate::clock::Timestamp;
use crate::network::Source;

/// The timeout of an element that has no end (a blocked network of the policy file, an API
/// entry without expiry): renewed by every resync, so it lapses a day after mailwarden stopped
/// asserting it, never later.
pub const OPEN_ENDED_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The longest timeout given (the `nft` of Debian 12 refuses much longer ones); a longer ban
/// is renewed by the resyncs.
pub const LONGEST_TIMEOUT: Duration = Duration::from_secs(100 * 24 * 3600);

/// An element shorter than this is left out: it ends before the batch is applied.
const SHORTEST_TIMEOUT: Duration = Duration::from_millis(50);

/// Elements per `add element` statement, so no line grows without bound.
const ELEMENTS_PER_STATEMENT: usize = 1000;

/// The names of the four sets in the table.
pub fn set_names(settings: &NftablesSettings) -> [String; 4] {
    let set = &settings.set;
    [format!("{set}_ipv4"), format!("{set}_ipv6"), format!("{set}_trusted_ipv4"), format!("{set}_trusted_ipv6")]
}

fn timeout(ends: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let left = match ends {
        None => OPEN_ENDED_TIMEOUT,
        Some(ends) if ends <= now => return None,
        Some(ends) => now.until(ends).min(LONGEST_TIMEOUT),
    };
    (left >= SHORTEST_TIMEOUT).then_some(left)
}

/// `599s500ms`: `nft` refuses a number of 2^32 or more in any unit, so milliseconds alone
/// would cap a timeout at 49 days.
fn nft_duration(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        millis => format!("{}s{millis}ms", duration.as_secs()),
    }
}

fn add_elements<'a>(
    out: &mut String,
    table: &str,
    set: &str,
    elements: impl Iterator<Item = (&'a IpNet, &'a Option<Timestamp>)>,
    now: Timestamp,
) {
    let rendered: Vec<String> = elements
        .filter_map(|(network, ends)| {
            let timeout = timeout(*ends, now)?;
            Some(format!("{} timeout {}", Source::from_network(*network), nft_duration(timeout)))
        })
        .collect();
    for chunk in rendered.chunks(ELEMENTS_PER_STATEMENT) {
        let _ = writeln!(out, "add element inet {table} {set} {{ {} }}", chunk.join(", "));
    }
}

fn add_all(out: &mut String, settings: &NftablesSettings, sets: &Sets, now: Timestamp) {
    let [v4, v6, trusted_v4, trusted_v6] = set_names(settings);
    let table = &settings.table;
    let v4_only = |n: &&IpNet| n.addr().is_ipv4();
    let v6_only = |n: &&IpNet| n.addr().is_ipv6();
    add_elements(out, table, &v4, sets.banned.iter().filter(|(n, _)| v4_only(n)), now);
    add_elements(out, table, &v6, sets.banned.iter().filter(|(n, _)| v6_only(n)), now);
    add_elements(out, table, &trusted_v4, sets.trusted.iter().filter(|(n, _)| v4_only(n)), now);
    add_elements(out, table, &trusted_v6, sets.trusted.iter().filter(|(n, _)| v6_only(n)), now);
}

/// The table created afresh with `sets` in it: what the start and every resync apply. The
/// first two lines make sure there is a table to delete, so the batch works whether or not
/// one exists, and nothing of an old one (a rule added by hand) survives.
pub fn whole_table(settings: &NftablesSettings, sets: &Sets, now: Timestamp) -> String {
    let table = &settings.table;
    let [v4, v6, trusted_v4, trusted_v6] = set_names(settings);
    let ports = if settings.ports.is_empty() {
        String::new()
    } else {
        let ports: Vec<String> = settings.ports.iter().map(u16::to_string).collect();
        format!("tcp dport {{ {} }} ", ports.join(", "))
    };
    let mut out = String::new();
    let _ = writeln!(out, "table inet {table} {{}}");
    let _ = writeln!(out, "delete table inet {table}");
    let _ = writeln!(out, "table inet {table} {{");
    for (name, kind) in [(&v4, "ipv4_addr"), (&v6, "ipv6_addr"), (&trusted_v4, "ipv4_addr"), (&trusted_v6, "ipv6_addr")]
    {
        let _ = writeln!(out, "  set {name} {{ type {kind}; flags interval, timeout; }}");
    }
    let _ = writeln!(out, "  chain input {{");
    let _ = writeln!(out, "    type filter hook input priority filter - 10; policy accept;");
    let _ = writeln!(out, "    {ports}ip saddr @{trusted_v4} accept");
    let _ = writeln!(out, "    {ports}ip6 saddr @{trusted_v6} accept");
    let _ = writeln!(out, "    {ports}ip saddr @{v4} drop");
    let _ = writeln!(out, "    {ports}ip6 saddr @{v6} drop");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    add_all(&mut out, settings, sets, now);
    out
}

/// Both kinds of set emptied and filled with `sets`.
pub fn refill(settings: &NftablesSettings, sets: &Sets, now: Timestamp) -> String {
    let mut out = String::new();
    for name in set_names(settings) {
        let _ = writeln!(out, "flush set inet {} {name}", settings.table);
    }
    add_all(&mut out, settings, sets, now);
    out
}

/// `added` put into the sets.
pub fn additions(settings: &NftablesSettings, added: &Sets, now: Timestamp) -> String {
    let mut out = String::new();
    add_all(&mut out, settings, added, now);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::sets::{Drops, Element};

    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn settings(ports: Vec<u16>) -> NftablesSettings {
        NftablesSettings {
            enabled: true,
            table: "mailwarden".into(),
            set: "banned".into(),
            ports,
            resync_every: Duration::from_secs(300),
        }
    }

    fn sets() -> Sets {
        let net = |t: &str| crate::network::parse_network(t).expect("a network");
        Sets::wanted(&Drops {
            banned: vec![
                Element { network: net("192.0.2.7"), ends: Some(NOW.plus(Duration::from_secs(600))) },
                Element { network: net("2001:db8:1:2::/64"), ends: Some(NOW.plus(Duration::from_millis(10))) },
                Element { network: net("198.51.100.0/24"), ends: None },
            ],
            trusted: vec![Element { network: net("10.0.0.0/8"), ends: None }],
        })
    }

    #[test]
    fn each_element_carries_a_timeout_ending_with_its_ban_and_one_about_to_end_is_left_out() {
        let batch = refill(&settings(vec![143]), &sets(), NOW);
        assert!(
            batch.contains(
                "add element inet mailwarden banned_ipv4 { 192.0.2.7 timeout 600s, 198.51.100.0/24 timeout 86400s }"
            ),
            "{batch}"
        );
        assert!(!batch.contains("2001:db8"), "{batch}");
        assert!(
            batch.contains("add element inet mailwarden banned_trusted_ipv4 { 10.0.0.0/8 timeout 86400s }"),
            "{batch}"
        );
        assert!(batch.starts_with("flush set inet mailwarden banned_ipv4\n"), "{batch}");
    }

    #[test]
    fn the_table_guards_the_ports_given_and_accepts_trusted_sources_before_it_drops() {
        let batch = whole_table(&settings(vec![143, 993]), &sets(), NOW);
        let accept = batch.find("tcp dport { 143, 993 } ip saddr @banned_trusted_ipv4 accept").expect(&batch);
        let drop = batch.find("tcp dport { 143, 993 } ip saddr @banned_ipv4 drop").expect(&batch);
        assert!(accept < drop, "{batch}");
        let every_port = whole_table(&settings(vec![]), &sets(), NOW);
        assert!(every_port.contains("    ip6 saddr @banned_ipv6 drop\n"), "{every_port}");
    }

    #[test]
    fn a_ban_longer_than_nft_takes_gets_the_longest_timeout_and_is_renewed_by_resyncs() {
        assert_eq!(timeout(Some(NOW.plus(Duration::from_secs(400 * 24 * 3600))), NOW), Some(LONGEST_TIMEOUT));
        assert_eq!(nft_duration(LONGEST_TIMEOUT), "8640000s");
        assert_eq!(nft_duration(Duration::from_millis(599_500)), "599s500ms");
    }
}
