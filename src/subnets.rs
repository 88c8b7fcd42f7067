//! Subnet aggregation: distributed guessing from one network (a botnet's share of a hosting
//! provider's /24, a rented IPv6 /48) shows as several of its sources banned within a short
//! time. This remembers, per subnet, which of its sources were banned lately, so the warden can
//! ban the subnet once `autoban.subnet_bans` of them were banned within `subnet_window`
//! (CSF's `LF_NETBLOCK`). Memory only, bounded: a restart starts the count afresh, and the
//! bans it places are stored like any other.

use crate::bounded::BoundedMap;
use crate::clock::Timestamp;
use crate::config::SubnetBans;
use crate::network::Source;

/// The sources of each subnet banned lately, with when.
pub struct SubnetWatch {
    recent: BoundedMap<Source, Vec<(Source, Timestamp)>>,
}

impl SubnetWatch {
    /// Watches at most `max_subnets` subnets; those whose last ban is oldest go first.
    pub fn new(max_subnets: u64) -> SubnetWatch {
        SubnetWatch { recent: BoundedMap::new(max_subnets, |_| {}) }
    }

    /// The subnet `source` belongs to under `settings`, when subnet bans are on and the
    /// subnet is wider than the source (sources of a /24 grouping make a /24 subnet pointless).
    pub fn subnet_of(source: Source, settings: &SubnetBans) -> Option<Source> {
        let net = source.network();
        let subnet = settings.grouping.source_of(net.addr());
        (settings.bans > 0 && subnet.network().prefix_len() < net.prefix_len()).then_some(subnet)
    }

    /// `source` of `subnet` was banned at `now`: the distinct sources of the subnet banned
    /// within the window, this one included.
    pub fn source_banned(&self, subnet: Source, source: Source, now: Timestamp, settings: &SubnetBans) -> u32 {
        let keep = settings.bans.max(1) as usize;
        self.recent.upsert(subnet, now, |banned| {
            let since = now.minus(settings.window);
            banned.retain(|(s, at)| *at > since && *s != source);
            if banned.len() >= keep {
                banned.remove(0);
            }
            banned.push((source, now));
            let count = u32::try_from(banned.len()).unwrap_or(u32::MAX);
            (count, now.plus(settings.window))
        })
    }

    /// Starts the subnet's count afresh (it has just been banned, or unbanned).
    pub fn forget(&self, subnet: Source) {
        self.recent.remove(&subnet);
    }

    pub fn sweep(&self, now: Timestamp) -> usize {
        self.recent.sweep(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{SourceGrouping, parse_ip};
    use std::time::Duration;

    const START: Timestamp = Timestamp(1_795_334_400_000);
    const SETTINGS: SubnetBans = SubnetBans {
        bans: 3,
        window: Duration::from_secs(3600),
        ban_for: Duration::from_secs(3600),
        grouping: SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 },
    };

    fn source(address: &str) -> Source {
        SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 }.source_of(parse_ip(address).unwrap())
    }

    #[test]
    fn three_sources_of_one_slash_24_banned_within_the_hour_count_three_and_older_bans_do_not() {
        let watch = SubnetWatch::new(1000);
        let subnet = SubnetWatch::subnet_of(source("198.51.100.7"), &SETTINGS).unwrap();
        assert_eq!(subnet.to_string(), "198.51.100.0/24");
        assert_eq!(watch.source_banned(subnet, source("198.51.100.7"), START, &SETTINGS), 1);
        let later = START.plus(Duration::from_secs(3601));
        assert_eq!(
            watch.source_banned(subnet, source("198.51.100.8"), later, &SETTINGS),
            1,
            "the first left the window"
        );
        assert_eq!(watch.source_banned(subnet, source("198.51.100.8"), later, &SETTINGS), 1, "one source counts once");
        assert_eq!(watch.source_banned(subnet, source("198.51.100.9"), later, &SETTINGS), 2);
        assert_eq!(watch.source_banned(subnet, source("198.51.100.10"), later, &SETTINGS), 3);
    }

    #[test]
    fn an_ipv6_64_aggregates_into_its_48_and_a_source_as_wide_as_the_subnet_does_not() {
        let v6 = SubnetWatch::subnet_of(source("2001:db8:5:6::1"), &SETTINGS).unwrap();
        assert_eq!(v6.to_string(), "2001:db8:5::/48");
        let wide = SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 }.source_of(parse_ip("198.51.100.7").unwrap());
        assert_eq!(SubnetWatch::subnet_of(wide, &SETTINGS), None);
        let off = SubnetBans { bans: 0, ..SETTINGS };
        assert_eq!(SubnetWatch::subnet_of(source("198.51.100.7"), &off), None);
    }
}
