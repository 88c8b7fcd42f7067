//! The simulated mail service the benchmark replays: client addresses placed in countries,
//! mailboxes with their usual addresses, mail apps and firewall rules, sources banned in
//! advance, the GeoIP country database that matches them (written with the repository's own
//! fixture writer, `tests/support/geoip.rs`), the policy.toml, and the plan of logins.
//!
//! Everything is derived from fixed seeds, so two runs replay the same logins.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The knobs of the login mix.
#[derive(Debug, Clone)]
pub struct MixSettings {
    /// Logins replayed in the throughput run.
    pub logins: usize,
    /// Distinct client addresses.
    pub sources: usize,
    /// Mailboxes.
    pub accounts: usize,
    /// Sources banned before the run.
    pub banned: usize,
    /// Share of mailboxes with firewall rules.
    pub firewall_share: f64,
    /// Whether the GeoIP database has a realistic number of networks (about 270,000, as deep
    /// as a real country database) or only one per /8 (for the smoke test).
    pub detailed_geoip: bool,
}

/// Which password a login uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Password {
    /// The right one.
    Right,
    /// The account's old password, saved in a forgotten device: the same wrong pwhash again
    /// and again from the account's usual address.
    Stale,
    /// A guess never made before.
    Guess(u32),
}

/// One login of the plan.
#[derive(Debug, Clone, Copy)]
pub struct Login {
    /// Index into `World::addresses` (the mix's sources, then the banned ones).
    pub source: u32,
    pub account: u32,
    pub password: Password,
    pub pop3: bool,
    /// Index into `DEVICES` (IMAP only).
    pub device: u8,
    /// Through the webmail server: `real_remote` is the webmail, `remote` the user.
    pub webmail: bool,
    pub tls: bool,
    pub session: u64,
}

/// IMAP ID strings of common mail apps, JSON-escaped as Dovecot sends them; "" for a client
/// that sends no ID.
const DEVICES: [&str; 6] = [
    r#"\"name\" \"Thunderbird\" \"version\" \"115.3.1\""#,
    r#"\"name\" \"iPhone Mail\" \"version\" \"21A329\""#,
    r#"\"name\" \"Microsoft Outlook\" \"version\" \"16.0.17328\""#,
    r#"\"name\" \"K-9 Mail\" \"version\" \"6.712\""#,
    r#"\"name\" \"Apple Mail\" \"version\" \"3774.100.2\""#,
    "",
];

/// The webmail server's address (in `networks.webmail`).
pub const WEBMAIL: &str = "192.0.2.10";

/// Countries and their weight among client addresses.
const COUNTRIES: [(&str, u32); 20] = [
    ("DE", 20),
    ("US", 15),
    ("FR", 12),
    ("GB", 8),
    ("NL", 6),
    ("IT", 6),
    ("ES", 5),
    ("PL", 4),
    ("CN", 4),
    ("BE", 3),
    ("CH", 3),
    ("AT", 3),
    ("BR", 3),
    ("IN", 3),
    ("RU", 3),
    ("SE", 2),
    ("JP", 2),
    ("CA", 2),
    ("AU", 1),
    ("VN", 1),
];

/// First octets never used for client addresses: private, loopback, shared, link-local,
/// documentation, multicast, the flood's and the banned sources' ranges.
fn reserved_first_octet(octet: u8) -> bool {
    matches!(octet, 0 | 10 | 32 | 45 | 100 | 127 | 169 | 172 | 192 | 198 | 203) || octet >= 224
}

/// The benchmark's world.
pub struct World {
    pub settings: MixSettings,
    /// The mix's sources (`settings.sources`), then the banned ones (`settings.banned`).
    pub addresses: Vec<IpAddr>,
    /// Each account's usual address and a second one (a phone on a mobile network).
    homes: Vec<(u32, u32)>,
    /// Rendered addresses, so bodies are not formatted from scratch.
    address_text: Vec<String>,
}

/// SplitMix64: a small, good, seedable generator.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_u64, |acc, &p| mix64(acc ^ p))
}

/// The country (if any) a weighted hash picks; about 5% of blocks are in no country.
fn pick_country(h: u64) -> Option<&'static str> {
    if h % 100 < 5 {
        return None;
    }
    let total: u32 = COUNTRIES.iter().map(|c| c.1).sum();
    let mut point = ((h >> 8) % u64::from(total)) as u32;
    for (code, weight) in COUNTRIES {
        if point < weight {
            return Some(code);
        }
        point -= weight;
    }
    None
}

impl World {
    pub fn new(settings: MixSettings) -> World {
        let mut addresses = Vec::with_capacity(settings.sources + settings.banned);
        let mut seen = std::collections::HashSet::new();
        let mut n = 0u64;
        while addresses.len() < settings.sources {
            n += 1;
            let h = hash(&[1, n]);
            // One client in ten on IPv6, as a share of mobile and home networks are.
            let address = if h % 10 == 0 {
                // In 2a00::/12, one address per /64 (a source is a /64).
                let bits = mix64(h);
                let top = 0x2a00 | ((bits >> 48) as u16 & 0x000f);
                IpAddr::V6(Ipv6Addr::new(top, (bits >> 32) as u16, (bits >> 16) as u16, bits as u16, 0, 0, 0, 1))
            } else {
                let [a, b, c, d] = ((h >> 16) as u32).to_be_bytes();
                if reserved_first_octet(a) || d == 0 || d == 255 {
                    continue;
                }
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            };
            if seen.insert(address) {
                addresses.push(address);
            }
        }
        addresses.extend((0..settings.banned).map(|i| IpAddr::V4(banned_address(i))));
        let sources = settings.sources.max(1) as u64;
        // A fifth of the accounts share a few addresses (offices, carrier-grade NAT).
        let homes = (0..settings.accounts as u64)
            .map(|a| {
                let h = hash(&[2, a]);
                let home = if h % 5 == 0 { (h >> 8) % (sources / 100).max(1) } else { (h >> 8) % sources };
                (home as u32, (hash(&[3, a]) % sources) as u32)
            })
            .collect();
        let address_text = addresses.iter().map(ToString::to_string).collect();
        World { settings, addresses, homes, address_text }
    }

    pub fn account_name(account: u32) -> String {
        format!("user{account}@example.com")
    }

    /// The country the GeoIP database places `address` in.
    pub fn country_of(&self, address: IpAddr) -> Option<&'static str> {
        match address {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                if !self.settings.detailed_geoip {
                    return pick_country(hash(&[4, u64::from(a)]));
                }
                if split_block(a, b) {
                    pick_country(hash(&[6, u64::from(a), u64::from(b), u64::from(c)]))
                } else {
                    pick_country(hash(&[5, u64::from(a), u64::from(b)]))
                }
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                if s[0] & 0xfff0 != 0x2a00 {
                    return None;
                }
                pick_country(hash(&[7, u64::from(s[0] & 0x000f), u64::from(s[1] >> 8)]))
            }
        }
    }

    /// Writes the GeoIP country database the world's addresses are placed by, and returns its
    /// path. Realistic depth: every /16 of the address space a network (one /16 in 64 split
    /// into its /24s), and 2a00::/12 in /24s: about 270,000 networks.
    pub fn write_geoip(&self, dir: &Path) -> PathBuf {
        let path = dir.join("bench-country.mmdb");
        let mut entries: Vec<(String, &'static str)> = Vec::new();
        for a in 1..=223u8 {
            if reserved_first_octet(a) {
                continue;
            }
            if !self.settings.detailed_geoip {
                if let Some(country) = pick_country(hash(&[4, u64::from(a)])) {
                    entries.push((format!("{a}.0.0.0/8"), country));
                }
                continue;
            }
            for b in 0..=255u8 {
                if split_block(a, b) {
                    for c in 0..=255u8 {
                        if let Some(country) = pick_country(hash(&[6, u64::from(a), u64::from(b), u64::from(c)])) {
                            entries.push((format!("{a}.{b}.{c}.0/24"), country));
                        }
                    }
                } else if let Some(country) = pick_country(hash(&[5, u64::from(a), u64::from(b)])) {
                    entries.push((format!("{a}.{b}.0.0/16"), country));
                }
            }
        }
        for low in 0..16u16 {
            for high in 0..256u16 {
                if let Some(country) = pick_country(hash(&[7, u64::from(low), u64::from(high)])) {
                    entries.push((format!("{:x}:{:x}00::/24", 0x2a00 | low, high), country));
                }
            }
        }
        let borrowed: Vec<(&str, &str)> =
            entries.iter().map(|(network, country)| (network.as_str(), *country)).collect();
        super::geoip_fixtures::write_country_db(&path, &borrowed, 1_790_000_000);
        path
    }

    /// The policy file's sections for the world: webmail, GeoIP and the mailboxes' rules.
    pub fn policy_sections(&self, country_db: &Path) -> String {
        let mut toml = String::new();
        let _ = writeln!(toml, "[networks]\nwebmail = [\"{WEBMAIL}/32\"]\n");
        let _ = writeln!(toml, "[geoip]\ncountry_db = {:?}\n", country_db.display().to_string());
        for account in 0..self.settings.accounts as u32 {
            if let Some(rules) = self.firewall_rules(account) {
                let _ = writeln!(toml, "[mailboxes.\"{}\"]\n{rules}", World::account_name(account));
            }
        }
        toml
    }

    /// Mailboxes with firewall rules.
    pub fn firewalled_accounts(&self) -> usize {
        (0..self.settings.accounts as u32).filter(|&a| self.has_rules(a)).count()
    }

    fn has_rules(&self, account: u32) -> bool {
        (hash(&[8, u64::from(account)]) % 10_000) as f64 / 10_000.0 < self.settings.firewall_share
    }

    /// The rule set of a firewalled mailbox, one of three kinds an owner would write: only my
    /// countries; never these countries; my office network plus one country.
    fn firewall_rules(&self, account: u32) -> Option<String> {
        if !self.has_rules(account) {
            return None;
        }
        let (home, second) = self.homes[account as usize];
        let home_address = self.addresses[home as usize];
        let home_country = self.country_of(home_address);
        let second_country = self.country_of(self.addresses[second as usize]).unwrap_or("DE");
        let network = match home_address {
            IpAddr::V4(v4) => format!("{}/24", Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
            IpAddr::V6(v6) => format!("{}/48", Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
        };
        let rules = match (hash(&[9, u64::from(account)]) % 3, home_country) {
            (0, Some(home_country)) => {
                format!(
                    "default = \"block\"\nrules = [ {{ action = \"allow\", country = [\"{home_country}\", \"{second_country}\"] }} ]\n"
                )
            }
            (1, _) => {
                let blocked: Vec<String> = ["CN", "RU", "VN", "BR", "IN"]
                    .into_iter()
                    .filter(|c| Some(*c) != home_country)
                    .map(|c| format!("\"{c}\""))
                    .collect();
                format!(
                    "default = \"allow\"\nrules = [ {{ action = \"block\", country = [{}] }} ]\n",
                    blocked.join(", ")
                )
            }
            _ => format!(
                "default = \"block\"\nrules = [ {{ action = \"allow\", network = \"{network}\" }}, {{ action = \"allow\", country = [\"{second_country}\"] }} ]\n"
            ),
        };
        Some(rules)
    }

    /// The logins to replay: 95% right passwords from the account's usual addresses (one in
    /// ten from its second address, one in twenty through the webmail), and 5% failures: 2%
    /// stale devices (one in fifty accounts has one), 2% guesses from the mix's sources, 1%
    /// guesses from the banned sources.
    pub fn plan(&self, logins: usize, seed: u64) -> Vec<Login> {
        let accounts = self.settings.accounts.max(1) as u64;
        let stale_accounts: Vec<u32> = (0..accounts as u32).filter(|&a| hash(&[10, u64::from(a)]) % 50 == 0).collect();
        let sources = self.settings.sources.max(1) as u64;
        (0..logins as u64)
            .map(|i| {
                let h = hash(&[11, seed, i]);
                let roll = h % 1000;
                let account = ((h >> 10) % accounts) as u32;
                let (home, second) = self.homes[account as usize];
                let pick = mix64(h);
                let guess = Password::Guess((hash(&[12, seed, i]) & 0xffff_ffff) as u32);
                let (source, account, password, webmail) = match roll {
                    0..950 => {
                        let source = if pick % 10 == 0 { second } else { home };
                        (source, account, Password::Right, pick % 20 == 1)
                    }
                    950..970 if !stale_accounts.is_empty() => {
                        let account = stale_accounts[(pick % stale_accounts.len() as u64) as usize];
                        (self.homes[account as usize].0, account, Password::Stale, false)
                    }
                    990..1000 if self.settings.banned > 0 => {
                        let banned = self.settings.sources as u64 + pick % self.settings.banned as u64;
                        (banned as u32, account, guess, false)
                    }
                    _ => ((pick % sources) as u32, account, guess, false),
                };
                let pop3 = (pick >> 20) % 5 == 0;
                Login {
                    source,
                    account,
                    password,
                    pop3,
                    device: ((pick >> 24) % DEVICES.len() as u64) as u8,
                    webmail,
                    tls: (pick >> 28) % 10 != 0,
                    session: mix64(pick),
                }
            })
            .collect()
    }

    /// The body of an `allow`, exactly as the shipped Dovecot snippet makes Dovecot send it:
    /// the configured keys sorted, then `tls` (reference §2.4).
    pub fn allow_body(&self, login: &Login, out: &mut Vec<u8>) {
        self.body(login, None, out);
    }

    /// The body of a `report`: `success` and `policy_reject` before `tls`.
    pub fn report_body(&self, login: &Login, success: bool, policy_reject: bool, out: &mut Vec<u8>) {
        self.body(login, Some((success, policy_reject)), out);
    }

    fn body(&self, login: &Login, outcome: Option<(bool, bool)>, out: &mut Vec<u8>) {
        out.clear();
        let remote = &self.address_text[login.source as usize];
        let real_remote = if login.webmail { WEBMAIL } else { remote.as_str() };
        let device = if login.pop3 { "" } else { DEVICES[usize::from(login.device)] };
        let protocol = if login.pop3 { "pop3" } else { "imap" };
        let pwhash = match login.password {
            Password::Right => hash(&[13, u64::from(login.account)]) as u32,
            Password::Stale => hash(&[14, u64::from(login.account)]) as u32,
            Password::Guess(g) => hash(&[15, u64::from(g)]) as u32,
        };
        let _ = write!(
            out,
            r#"{{"device_id":"{device}","login":"user{}@example.com","protocol":"{protocol}","pwhash":"{pwhash:08x}","real_remote":"{real_remote}","remote":"{remote}","session_id":""#,
            login.account
        );
        session_id(login.session, out);
        out.push(b'"');
        if let Some((success, policy_reject)) = outcome {
            let _ = write!(out, r#","success":{success},"policy_reject":{policy_reject}"#);
        }
        let _ = write!(out, r#","tls":{}}}"#, login.tls);
    }
}

/// A /16 whose /24s are in different countries (one in 64), as busy ranges are in real data.
fn split_block(a: u8, b: u8) -> bool {
    hash(&[16, u64::from(a), u64::from(b)]) % 64 == 0
}

/// Dovecot's session ids look like `VmEkE9lgRrh/AAAB`: 16 base64 characters.
fn session_id(value: u64, out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = value;
    for i in 0..16 {
        if i == 10 {
            bits = mix64(value);
        }
        out.push(ALPHABET[(bits & 63) as usize]);
        bits >>= 6;
    }
}

/// The banned sources of the mix and of the memory runs: 45.0.0.1, 45.0.1.1, ...
pub fn banned_address(index: usize) -> Ipv4Addr {
    // One a /24, so that the bans placed first stay source bans (three of one /24 would ban
    // the subnet too, `autoban.subnet_bans`).
    Ipv4Addr::from(u32::from(Ipv4Addr::new(45, 0, 0, 1)) + (index as u32) * 256)
}

/// The flood's sources: 32.0.0.0 and up, one address each.
pub fn flood_address(index: u64) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(32, 0, 0, 0)).wrapping_add(index as u32))
}

/// A failed login from flood source `index`: a login and a wrong password never seen before,
/// as credential stuffing from a botnet sends them. The logins are all as long (eight digits):
/// with `victim{index}` the millionth source's login gained a byte, moved from a 32- to a
/// 48-byte heap block, and the flood's plateau then measured 46 MiB of that switch (new
/// histories could not reuse the freed smaller blocks) rather than whether the cap holds.
pub fn flood_report_body(index: u64, out: &mut Vec<u8>) {
    out.clear();
    let address = flood_address(index);
    let _ = write!(
        out,
        r#"{{"device_id":"","login":"victim{index:08}@example.net","protocol":"imap","pwhash":"{:08x}","real_remote":"{address}","remote":"{address}","session_id":""#,
        mix64(index) as u32
    );
    session_id(mix64(index ^ 0xF100D), out);
    out.extend_from_slice(br#"","success":false,"policy_reject":false,"tls":true}"#);
}

/// `count` distinct wrong passwords for `login` from `address`, as report bodies: what bans a
/// source with the default `max_failures` of 5.
pub fn ban_reports(address: IpAddr, login: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                r#"{{"device_id":"","login":"{login}","protocol":"imap","pwhash":"{:08x}","real_remote":"{address}","remote":"{address}","session_id":"BanningSession{i:02}","success":false,"policy_reject":false,"tls":true}}"#,
                hash(&[17, i as u64]) as u32
            )
        })
        .collect()
}

/// An `allow` body for `login` from `address`.
pub fn allow_body_for(address: IpAddr, login: &str) -> String {
    format!(
        r#"{{"device_id":"","login":"{login}","protocol":"imap","pwhash":"0badc0de","real_remote":"{address}","remote":"{address}","session_id":"CheckingSession1","tls":true}}"#
    )
}

/// Writes `text` to `path`, creating folders.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::File::create(path)?.write_all(text.as_bytes())
}
