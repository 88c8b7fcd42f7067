//! The admin API's input types: firewall rule sets and rules as JSON, addresses and networks,
//! logins and domains, times and lengths. Any input must parse or be refused, never panic; a
//! parsed rule set must write itself back in a form that parses to the same rules; any time,
//! however far out, formats; escaped text has no control character left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailwarden::clock::{Timestamp, checked_length};
use mailwarden::firewall::{RuleSpec, StoredRuleSet, parse_key};
use mailwarden::network::{parse_ip, parse_network};

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = serde_json::from_slice::<StoredRuleSet>(data) {
        if let Ok(parsed) = set.parse() {
            let written = StoredRuleSet::from(&parsed);
            let again = written.parse().expect("a written rule set parses");
            assert_eq!(again, parsed, "a rule set survives writing it back");
        }
    }
    if let Ok(rule) = serde_json::from_slice::<RuleSpec>(data) {
        if let Ok(parsed) = rule.parse() {
            assert_eq!(parsed.spec().parse().expect("a written rule parses"), parsed);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_ip(text);
        let _ = parse_network(text);
        let _ = parse_key(text);
        if let Some(time) = Timestamp::parse_rfc3339(text) {
            assert!(Timestamp::parse_rfc3339(&time.rfc3339()).is_some(), "a parsed time formats and parses again");
        }
        let _ = checked_length(text);
        assert!(!mailwarden::printable::escape(text).chars().any(char::is_control));
    }
    if let Some(bytes) = data.get(..8) {
        let time = Timestamp(i64::from_le_bytes(bytes.try_into().unwrap_or_default()));
        assert_eq!(time.rfc3339().len(), 20);
        let _ = time.short_utc(Timestamp(0));
    }
});
