//! Addresses at the edge: parsing the addresses Dovecot and admins send, grouping a client
//! address into the "source" that failures are counted and bans are placed on (IPv4 /32,
//! IPv6 /64 by default), and maps of networks matched by longest prefix.
//! Nothing here knows about failures, bans, lists or HTTP.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::hashing::KeyedMap;

/// What an error quotes of the text it refused: enough to recognise it, never a whole
/// oversized field echoed back (an address is at most 45 characters, a zone a few more).
fn quoted(text: &str) -> String {
    text.chars().take(64).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not an IP address")]
    NotAnAddress(String),
    #[error("{0:?} is not an IP address or network (expected e.g. 192.0.2.7, 192.0.2.0/24 or 2001:db8::/48)")]
    NotANetwork(String),
}

/// Parses an address as Dovecot or an admin writes it. IPv4-mapped IPv6 (`::ffff:192.0.2.7`)
/// becomes the IPv4 address, so one client is one source whichever way its socket was opened;
/// a zone index (`fe80::1%eth0`) is dropped.
pub fn parse_ip(text: &str) -> Result<IpAddr, AddressError> {
    let trimmed = text.trim();
    let without_zone = trimmed.split('%').next().unwrap_or(trimmed);
    let without_brackets = without_zone.trim_start_matches('[').trim_end_matches(']');
    without_brackets.parse::<IpAddr>().map(canonical_ip).map_err(|_| AddressError::NotAnAddress(quoted(text)))
}

/// Parses `192.0.2.7`, `192.0.2.0/24` or `2001:db8::/48`. Host bits below the prefix are
/// cleared, so `192.0.2.77/24` means `192.0.2.0/24`.
pub fn parse_network(text: &str) -> Result<IpNet, AddressError> {
    let trimmed = text.trim();
    if trimmed.contains('/') {
        trimmed.parse::<IpNet>().map(|net| net.trunc()).map_err(|_| AddressError::NotANetwork(quoted(text)))
    } else {
        parse_ip(trimmed).map(IpNet::from).map_err(|_| AddressError::NotANetwork(quoted(text)))
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The unit failures are counted on and bans are placed on: a client address truncated to
/// the configured prefix. Displayed as a bare address for a single host (`203.0.113.7`) and as
/// CIDR otherwise (`2001:db8:1:2::/64`), which is what users and admins expect to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpNet);

impl Source {
    pub fn network(self) -> IpNet {
        self.0
    }

    pub fn contains(self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// The source that is exactly `net` (host bits cleared).
    pub fn from_network(net: IpNet) -> Source {
        Source(net.trunc())
    }

    /// Reads back what `Display` (or `IpNet`'s display) wrote.
    pub fn parse(text: &str) -> Result<Source, AddressError> {
        parse_network(text).map(Source)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// How client addresses are grouped into sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceGrouping {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl SourceGrouping {
    pub fn source_of(self, ip: IpAddr) -> Source {
        let net = match ip {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, self.ipv4_prefix).unwrap_or_else(|_| Ipv4Net::from(v4))),
            IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(v6, self.ipv6_prefix).unwrap_or_else(|_| Ipv6Net::from(v6))),
        };
        Source(net.trunc())
    }

    /// `source`, taken under an earlier grouping, as a source of this one: the same or a
    /// wider network; `None` when this grouping is narrower (which of its sources it was
    /// cannot be told).
    pub fn regroup(self, source: Source) -> Option<Source> {
        let regrouped = self.source_of(source.network().addr());
        (regrouped.network().prefix_len() <= source.network().prefix_len()).then_some(regrouped)
    }
}

/// A set of networks, each with a value, matched by longest prefix. Lookups cost one hash
/// probe per distinct prefix length in the set, so a list of thousands of /32s and a few
/// ranges stays as cheap as a short one.
#[derive(Clone, Debug)]
pub struct NetworkMap<T> {
    v4: Vec<(u8, KeyedMap<u32, (IpNet, T)>)>,
    v6: Vec<(u8, KeyedMap<u128, (IpNet, T)>)>,
    len: usize,
}

impl<T> Default for NetworkMap<T> {
    fn default() -> Self {
        NetworkMap { v4: Vec::new(), v6: Vec::new(), len: 0 }
    }
}

fn v4_bits(addr: Ipv4Addr, prefix: u8) -> u32 {
    let bits = u32::from(addr);
    if prefix == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix))) }
}

fn v6_bits(addr: Ipv6Addr, prefix: u8) -> u128 {
    let bits = u128::from(addr);
    if prefix == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix))) }
}

fn bucket<K, V>(buckets: &mut Vec<(u8, KeyedMap<K, V>)>, prefix: u8) -> &mut KeyedMap<K, V> {
    let position = match buckets.iter().position(|(p, _)| *p <= prefix) {
        Some(i) if buckets[i].0 == prefix => i,
        Some(i) => {
            buckets.insert(i, (prefix, KeyedMap::default()));
            i
        }
        None => {
            buckets.push((prefix, KeyedMap::default()));
            buckets.len() - 1
        }
    };
    &mut buckets[position].1
}

impl<T> NetworkMap<T> {
    /// Adds or replaces the entry for exactly this network.
    pub fn insert(&mut self, net: IpNet, value: T) {
        let net = net.trunc();
        let previous = match net {
            IpNet::V4(n) => {
                bucket(&mut self.v4, n.prefix_len()).insert(v4_bits(n.addr(), n.prefix_len()), (net, value))
            }
            IpNet::V6(n) => {
                bucket(&mut self.v6, n.prefix_len()).insert(v6_bits(n.addr(), n.prefix_len()), (net, value))
            }
        };
        if previous.is_none() {
            self.len += 1;
        }
    }

    /// The most specific network containing `ip`, with its value.
    pub fn longest_match(&self, ip: IpAddr) -> Option<(IpNet, &T)> {
        self.longest_match_where(ip, |_| true)
    }

    /// The most specific network containing `ip` whose value satisfies `usable` (for example,
    /// has not expired); less specific networks are tried when a more specific one is not.
    pub fn longest_match_where(&self, ip: IpAddr, usable: impl Fn(&T) -> bool) -> Option<(IpNet, &T)> {
        let found = match canonical_ip(ip) {
            IpAddr::V4(v4) => self
                .v4
                .iter()
                .filter_map(|(prefix, map)| map.get(&v4_bits(v4, *prefix)))
                .find(|(_, value)| usable(value)),
            IpAddr::V6(v6) => self
                .v6
                .iter()
                .filter_map(|(prefix, map)| map.get(&v6_bits(v6, *prefix)))
                .find(|(_, value)| usable(value)),
        };
        found.map(|(net, value)| (*net, value))
    }

    /// The value stored for exactly `net`.
    pub fn get(&self, net: IpNet) -> Option<&T> {
        let net = net.trunc();
        match net {
            IpNet::V4(n) => self
                .v4
                .iter()
                .find(|(p, _)| *p == n.prefix_len())
                .and_then(|(_, map)| map.get(&v4_bits(n.addr(), n.prefix_len())))
                .map(|(_, v)| v),
            IpNet::V6(n) => self
                .v6
                .iter()
                .find(|(p, _)| *p == n.prefix_len())
                .and_then(|(_, map)| map.get(&v6_bits(n.addr(), n.prefix_len())))
                .map(|(_, v)| v),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.iter().flat_map(|(_, map)| map.values());
        let v6 = self.v6.iter().flat_map(|(_, map)| map.values());
        v4.chain(v6).map(|(net, value)| (*net, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        parse_ip(text).expect("test address")
    }

    fn net(text: &str) -> IpNet {
        parse_network(text).expect("test network")
    }

    #[test]
    fn dovecot_addresses_parse_with_mapped_v4_and_zones_normalised() {
        assert_eq!(ip("203.0.113.7"), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(ip("::ffff:203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(ip("fe80::1%eth0"), "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(ip(" 2001:db8::1 "), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert!(matches!(parse_ip("not-an-ip"), Err(AddressError::NotAnAddress(_))));
        assert!(parse_ip("").is_err());
        assert!(parse_ip("203.0.113.256").is_err());
    }

    #[test]
    fn networks_accept_bare_hosts_and_clear_host_bits() {
        assert_eq!(net("192.0.2.77/24").to_string(), "192.0.2.0/24");
        assert_eq!(net("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
        assert!(parse_network("192.0.2.0/33").is_err());
        assert!(parse_network("example.com").is_err());
    }

    #[test]
    fn sources_group_ipv4_per_host_and_ipv6_per_64() {
        let grouping = SourceGrouping { ipv4_prefix: 32, ipv6_prefix: 64 };
        let a = grouping.source_of(ip("2001:db8:1:2:aaaa::1"));
        let b = grouping.source_of(ip("2001:db8:1:2:bbbb::2"));
        let c = grouping.source_of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(grouping.source_of(ip("203.0.113.7")).to_string(), "203.0.113.7");
        let wide = SourceGrouping { ipv4_prefix: 24, ipv6_prefix: 48 };
        assert_eq!(wide.source_of(ip("203.0.113.7")).to_string(), "203.0.113.0/24");
    }

    #[test]
    fn source_display_round_trips_through_parse() {
        for text in ["203.0.113.7", "2001:db8:1:2::/64", "198.51.100.0/24"] {
            assert_eq!(Source::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn longest_prefix_wins_in_a_network_map() {
        let mut map = NetworkMap::default();
        map.insert(net("10.0.0.0/8"), "wide");
        map.insert(net("10.1.0.0/16"), "narrow");
        map.insert(net("2001:db8::/32"), "v6");
        assert_eq!(map.longest_match(ip("10.1.2.3")).map(|(_, v)| *v), Some("narrow"));
        assert_eq!(map.longest_match(ip("10.2.2.3")).map(|(_, v)| *v), Some("wide"));
        assert_eq!(map.longest_match(ip("11.0.0.1")), None);
        assert_eq!(map.longest_match(ip("2001:db8:ffff::1")).map(|(_, v)| *v), Some("v6"));
        assert_eq!(map.longest_match(ip("::ffff:10.1.0.1")).map(|(_, v)| *v), Some("narrow"));
        assert_eq!(map.len(), 3);
        map.insert(net("10.1.0.0/16"), "replaced");
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(net("10.1.0.0/16")), Some(&"replaced"));
        assert_eq!(map.get(net("10.1.0.0/17")), None);
        let skip_narrow = map.longest_match_where(ip("10.1.2.3"), |v| *v != "replaced");
        assert_eq!(skip_narrow.map(|(_, v)| *v), Some("wide"));
    }
}
