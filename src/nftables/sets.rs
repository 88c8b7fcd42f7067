//! What the host firewall's sets should hold, pure: the warden's drops (active source and
//! subnet bans, blocked networks) and trusted networks turned into interval-set elements
//! that the kernel accepts (no two of a set overlap), and the smallest batch that brings the
//! sets from what was applied to what is wanted. No I/O; `nftables::Enforcer` runs the
//! batches.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use crate::clock::Timestamp;

/// A network the firewall should hold, until `ends` (`None`: while the entry stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub network: IpNet,
    pub ends: Option<Timestamp>,
}

/// What the warden wants enforced (`Warden::firewall_drops`, the one place that decides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    /// Dropped on the guarded ports.
    pub banned: Vec<Element>,
    /// Never dropped, whatever `banned` holds.
    pub trusted: Vec<Element>,
}

type Held = BTreeMap<IpNet, Option<Timestamp>>;

/// The contents of the two kinds of set, without overlaps, as applied or as wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    pub banned: Held,
    pub trusted: Held,
    /// When an element left out because a wider one covers it may be needed again (the
    /// wider one ends first): the worker recomputes then.
    pub review_at: Option<Timestamp>,
}

/// `None` (never ends) sorts after every time.
fn end_key(ends: Option<Timestamp>) -> i64 {
    ends.map_or(i64::MAX, |t| t.0)
}

/// Duplicates merged, the longest end kept.
fn merged(elements: &[Element]) -> Held {
    let mut held = Held::new();
    for element in elements {
        let network = element.network.trunc();
        let ends = held.entry(network).or_insert(element.ends);
        if end_key(element.ends) > end_key(*ends) {
            *ends = element.ends;
        }
    }
    held
}

/// Where a network's covering networks would be: one key per prefix length held.
struct Covers<'a> {
    held: &'a Held,
    lengths: HashMap<bool, Vec<u8>>,
}

impl<'a> Covers<'a> {
    fn of(held: &'a Held) -> Covers<'a> {
        let mut lengths: HashMap<bool, Vec<u8>> = HashMap::new();
        for network in held.keys() {
            let lengths = lengths.entry(network.addr().is_ipv4()).or_default();
            if !lengths.contains(&network.prefix_len()) {
                lengths.push(network.prefix_len());
            }
        }
        Covers { held, lengths }
    }

    /// The latest end among the held networks that contain `network` (itself included when
    /// `or_equal`), if any does.
    fn latest_end(&self, network: IpNet, or_equal: bool) -> Option<Option<Timestamp>> {
        let lengths = self.lengths.get(&network.addr().is_ipv4())?;
        lengths
            .iter()
            .filter(|len| **len < network.prefix_len() || (or_equal && **len == network.prefix_len()))
            .filter_map(|len| {
                let wider = IpNet::new(network.addr(), *len).ok()?.trunc();
                self.held.get(&wider).copied()
            })
            .max_by_key(|ends| end_key(*ends))
    }
}

/// `held` without the networks `covers` contains, and when the first of those must come
/// back because its cover ends before it does.
fn uncovered(held: &Held, covers: &Held, or_equal: bool) -> (Held, Option<Timestamp>) {
    let covers = Covers::of(covers);
    let mut review_at: Option<Timestamp> = None;
    let mut kept = Held::new();
    for (network, ends) in held {
        match covers.latest_end(*network, or_equal) {
            None => {
                kept.insert(*network, *ends);
            }
            Some(cover_ends) => {
                if end_key(cover_ends) < end_key(*ends) {
                    if let Some(at) = cover_ends {
                        review_at = Some(review_at.map_or(at, |r| r.min(at)));
                    }
                }
            }
        }
    }
    (kept, review_at)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Sets {
    /// The sets for `drops`: duplicates merged, a network inside a wider one of its set left
    /// out (an interval set refuses overlaps), and a drop inside a trusted network left out
    /// (the chain accepts trusted sources before it drops anyway; leaving it out keeps the
    /// plain-text list from naming it).
    pub fn wanted(drops: &Drops) -> Sets {
        let (trusted, trusted_review) = uncovered(&merged(&drops.trusted), &merged(&drops.trusted), false);
        let (banned, inside_trusted_review) = uncovered(&merged(&drops.banned), &trusted, true);
        let (banned, banned_review) = uncovered(&banned, &banned, false);
        let review_at = earliest(earliest(trusted_review, inside_trusted_review), banned_review);
        Sets { banned, trusted, review_at }
    }

    /// The elements of the banned set: what the plain-text list serves.
    pub fn banned_networks(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.banned.keys().copied()
    }
}

/// How to bring the kernel from `applied` to `wanted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed (elements that ended left the kernel's sets by their timeouts).
    Nothing,
    /// Only new elements, none overlapping what the sets may still hold: add them.
    Add(Sets),
    /// Something was lifted early, or changed its end, or overlaps: flush both sets and add
    /// everything, in one atomic batch.
    Refill,
}

/// Whether `network` contains, or is contained in, a network of `held`.
fn overlaps(network: IpNet, held: &Held, covers: &Covers<'_>) -> bool {
    covers.latest_end(network, true).is_some()
        || held.range(network..).take_while(|(n, _)| network.contains(&n.addr())).next().is_some()
}

/// The step from `applied` (what the last successful batch left, some of it since ended in
/// the kernel) to `wanted`, at `now`.
pub fn step(applied: &Sets, wanted: &Sets, now: Timestamp) -> Step {
    let mut added = Sets::default();
    for (applied_held, wanted_held, added_held) in
        [(&applied.banned, &wanted.banned, &mut added.banned), (&applied.trusted, &wanted.trusted, &mut added.trusted)]
    {
        let covers = Covers::of(applied_held);
        for (network, ends) in applied_held {
            let still_in_kernel = end_key(*ends) > now.0;
            if still_in_kernel && wanted_held.get(network) != Some(ends) {
                return Step::Refill;
            }
        }
        for (network, ends) in wanted_held {
            if applied_held.get(network) == Some(ends) && end_key(*ends) > now.0 {
                continue;
            }
            // An element that ended may still be in the kernel for a moment: any overlap
            // with what was applied, ended or not, is left to a refill.
            if overlaps(*network, applied_held, &covers) {
                return Step::Refill;
            }
            added_held.insert(*network, *ends);
        }
    }
    if added.banned.is_empty() && added.trusted.is_empty() { Step::Nothing } else { Step::Add(added) }
}

/// `applied` after `added` went in: the elements that ended dropped, the new ones held.
pub fn after_adding(applied: &Sets, added: &Sets, now: Timestamp) -> Sets {
    let live = |held: &Held, more: &Held| -> Held {
        held.iter().chain(more.iter()).filter(|(_, ends)| end_key(**ends) > now.0).map(|(n, e)| (*n, *e)).collect()
    };
    Sets {
        banned: live(&applied.banned, &added.banned),
        trusted: live(&applied.trusted, &added.trusted),
        review_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: Timestamp = Timestamp(1_795_334_400_000);

    fn net(text: &str) -> IpNet {
        crate::network::parse_network(text).expect("a network")
    }

    fn until(text: &str, minutes: u64) -> Element {
        Element { network: net(text), ends: Some(NOW.plus(Duration::from_secs(minutes * 60))) }
    }

    fn forever(text: &str) -> Element {
        Element { network: net(text), ends: None }
    }

    fn networks(held: &Held) -> Vec<String> {
        held.keys().map(ToString::to_string).collect()
    }

    #[test]
    fn an_address_inside_a_banned_subnet_is_left_to_the_subnet_while_the_subnet_outlasts_it() {
        let drops = Drops {
            banned: vec![until("192.0.2.7", 10), until("192.0.2.0/24", 60), until("2001:db8::/64", 5)],
            trusted: vec![],
        };
        let sets = Sets::wanted(&drops);
        assert_eq!(networks(&sets.banned), ["192.0.2.0/24", "2001:db8::/64"]);
        assert_eq!(sets.review_at, None);
    }

    #[test]
    fn an_address_that_outlasts_its_subnet_comes_back_when_the_subnet_ends() {
        let drops = Drops { banned: vec![until("192.0.2.7", 90), until("192.0.2.0/24", 60)], trusted: vec![] };
        let sets = Sets::wanted(&drops);
        assert_eq!(networks(&sets.banned), ["192.0.2.0/24"]);
        assert_eq!(sets.review_at, Some(NOW.plus(Duration::from_secs(3600))));
    }

    #[test]
    fn a_drop_inside_a_trusted_network_is_left_out_and_the_same_network_twice_keeps_the_later_end() {
        let drops = Drops {
            banned: vec![until("10.1.2.3", 10), until("203.0.113.9", 10), until("203.0.113.9", 30)],
            trusted: vec![forever("10.0.0.0/8")],
        };
        let sets = Sets::wanted(&drops);
        assert_eq!(networks(&sets.banned), ["203.0.113.9/32"]);
        assert_eq!(sets.banned.values().next(), Some(&Some(NOW.plus(Duration::from_secs(1800)))));
        assert_eq!(networks(&sets.trusted), ["10.0.0.0/8"]);
    }

    #[test]
    fn a_new_ban_is_added_alone_and_a_lifted_one_refills() {
        let before = Sets::wanted(&Drops { banned: vec![until("192.0.2.1", 10)], trusted: vec![] });
        let more =
            Sets::wanted(&Drops { banned: vec![until("192.0.2.1", 10), until("192.0.2.2", 10)], trusted: vec![] });
        match step(&before, &more, NOW) {
            Step::Add(added) => assert_eq!(networks(&added.banned), ["192.0.2.2/32"]),
            other => panic!("expected an addition, got {other:?}"),
        }
        assert_eq!(step(&more, &before, NOW), Step::Refill, "a lifted ban must leave the set");
        assert_eq!(step(&more, &more, NOW), Step::Nothing);
    }

    #[test]
    fn a_ban_that_ended_by_its_timeout_needs_no_batch_and_a_wider_one_over_it_refills() {
        let applied = Sets::wanted(&Drops { banned: vec![until("192.0.2.1", 10)], trusted: vec![] });
        let later = NOW.plus(Duration::from_secs(11 * 60));
        assert_eq!(step(&applied, &Sets::default(), later), Step::Nothing);
        let subnet = Sets::wanted(&Drops { banned: vec![until("192.0.2.0/24", 60)], trusted: vec![] });
        assert_eq!(step(&applied, &subnet, later), Step::Refill, "the ended element may still be in the kernel");
    }

    #[test]
    fn a_ban_extended_in_place_refills() {
        let applied = Sets::wanted(&Drops { banned: vec![until("192.0.2.1", 10)], trusted: vec![] });
        let longer = Sets::wanted(&Drops { banned: vec![until("192.0.2.1", 40)], trusted: vec![] });
        assert_eq!(step(&applied, &longer, NOW), Step::Refill);
    }
}
