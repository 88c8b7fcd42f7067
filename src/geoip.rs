//! GeoIP facts about a client address, for the mailbox firewall: its country, its AS number,
//! and whether it is "non-residential" (a hosting provider, VPN, proxy or Tor exit according
//! to a GeoIP2 Anonymous IP database, or on the admin's lists of AS numbers and networks).
//! The databases are MaxMind DB (`.mmdb`) files, memory-mapped; `refresh` re-opens those that
//! changed on disk and swaps them in without disturbing lookups in flight.
//!
//! This module answers questions and decides nothing (that is `firewall`). It does not read
//! policy.toml (`config` builds `GeoIpSettings`) and does not download databases (that is
//! geoipupdate's job). Database files must be replaced by renaming a new file over the old
//! one, as geoipupdate does, never rewritten in place: a file is mapped, not copied.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read as _};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use maxminddb::{MaxMindDbError, Mmap, Reader};
use prometheus::{IntCounter, IntCounterVec};
use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

use crate::metrics::GeoIpMetrics;
use crate::network::{NetworkMap, parse_network};

const ASN_LIST_SETTING: &str = "geoip.non_residential_asns_file";
const NETWORK_LIST_SETTING: &str = "geoip.non_residential_networks_file";

/// Where the GeoIP data lives. Built by `config` from policy.toml's `[geoip]` table, with
/// paths already absolute. Every file is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoIpSettings {
    /// A country database: GeoLite2-Country, GeoIP2-Country or -City, DB-IP's country lite,
    /// or one of ip-location-db's country mmdb files.
    pub country_db: Option<PathBuf>,
    /// An ASN database: GeoLite2-ASN or ip-location-db's asn mmdb.
    pub asn_db: Option<PathBuf>,
    /// GeoIP2-Anonymous-IP: hosting providers, VPNs, proxies and Tor exits.
    pub anonymous_db: Option<PathBuf>,
    /// AS numbers whose addresses are non-residential, one a line (`AS16509` or `16509`),
    /// `#` comments. Needs `asn_db`, which maps an address to its AS number.
    pub non_residential_asns_file: Option<PathBuf>,
    /// Addresses or networks (CIDR) that are non-residential, one a line, `#` comments.
    pub non_residential_networks_file: Option<PathBuf>,
}

/// An ISO 3166-1 alpha-2 country code, held in upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Two ASCII letters, in either case.
    pub fn parse(text: &str) -> Option<CountryCode> {
        match *text.as_bytes() {
            [first, second] if first.is_ascii_alphabetic() && second.is_ascii_alphabetic() => {
                Some(CountryCode([first.to_ascii_uppercase(), second.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Always two ASCII letters (see `parse`), so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an address is not residential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonResidential {
    /// The anonymous-IP database flags it.
    Anonymous(AnonymousKind),
    /// Its AS number is on the non-residential AS list.
    ListedAsn(u32),
    /// It is inside a network on the non-residential network list.
    ListedNetwork,
}

/// The GeoIP2 Anonymous IP flag that marked an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnonymousKind {
    Hosting,
    Vpn,
    PublicProxy,
    ResidentialProxy,
    TorExit,
    /// Only the catch-all `is_anonymous` flag.
    Anonymous,
}

impl fmt::Display for AnonymousKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnonymousKind::Hosting => "a hosting provider",
            AnonymousKind::Vpn => "an anonymous VPN",
            AnonymousKind::PublicProxy => "a public proxy",
            AnonymousKind::ResidentialProxy => "a residential proxy",
            AnonymousKind::TorExit => "a Tor exit node",
            AnonymousKind::Anonymous => "an anonymous network",
        })
    }
}

impl fmt::Display for NonResidential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NonResidential::Anonymous(kind) => write!(f, "{kind}"),
            NonResidential::ListedAsn(asn) => write!(f, "AS{asn}, on the non-residential AS list"),
            NonResidential::ListedNetwork => f.write_str("on the non-residential network list"),
        }
    }
}

/// Why the GeoIP files could not be used. Every message names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Unreadable { setting: &'static str, path: PathBuf, source: io::Error },
    #[error("{setting}: {} is not a MaxMind DB (.mmdb) file: {source}", path.display())]
    NotAnMmdb { setting: &'static str, path: PathBuf, source: MaxMindDbError },
    #[error(
        "{setting}: {} is a {database_type:?} database ({holds}), not {expected}",
        path.display()
    )]
    WrongDatabaseType {
        setting: &'static str,
        path: PathBuf,
        /// As the file's metadata names it.
        database_type: String,
        /// What the file holds instead.
        holds: &'static str,
        /// What the setting needs.
        expected: &'static str,
    },
    #[error("{setting}: {} line {line}: {reason}", path.display())]
    BadLine {
        setting: &'static str,
        path: PathBuf,
        /// Counted from 1, as editors do.
        line: usize,
        reason: String,
    },
    #[error(
        "{ASN_LIST_SETTING}: {} lists AS numbers, but geoip.asn_db is not set, so an \
         address's AS number cannot be known",
        path.display()
    )]
    AsnListWithoutAsnDb { path: PathBuf },
}

/// One configured database, as `databases` describes it (for `check-config` and the admin
/// API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// `country`, `asn` or `anonymous`, as in the metrics' `database` label.
    pub name: &'static str,
    pub path: PathBuf,
    /// As the file's metadata names it, e.g. `GeoLite2-Country`.
    pub database_type: String,
    /// When the file was built (Unix time).
    pub build_epoch: u64,
}

/// The GeoIP databases and lists, shared as `Arc<GeoIp>`. Lookups never fail: an address
/// that is unknown, or that a broken database cannot answer for, has no answer.
pub struct GeoIp {
    country: Option<Database>,
    asn: Option<Database>,
    anonymous: Option<Database>,
    listed_asns: Option<Watched<HashSet<u32>>>,
    listed_networks: Option<Watched<NetworkMap<()>>>,
    metrics: GeoIpMetrics,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = |database: &Option<Database>| database.as_ref().map(|d| d.file.path.clone());
        f.debug_struct("GeoIp")
            .field("country_db", &path(&self.country))
            .field("asn_db", &path(&self.asn))
            .field("anonymous_db", &path(&self.anonymous))
            .field("non_residential_asns_file", &self.listed_asns.as_ref().map(|list| &list.path))
            .field("non_residential_networks_file", &self.listed_networks.as_ref().map(|list| &list.path))
            .finish()
    }
}

impl GeoIp {
    /// Opens every configured file, refusing the first that is missing, is not what its
    /// setting needs, or (for a list) has a bad line.
    pub fn open(settings: &GeoIpSettings, metrics: GeoIpMetrics) -> Result<GeoIp, GeoIpError> {
        if let (Some(path), None) = (&settings.non_residential_asns_file, &settings.asn_db) {
            return Err(GeoIpError::AsnListWithoutAsnDb { path: path.clone() });
        }
        let database = |role: Role, path: &Option<PathBuf>| {
            path.as_deref().map(|path| Database::open(role, path, &metrics)).transpose()
        };
        let country = database(Role::Country, &settings.country_db)?;
        let asn = database(Role::Asn, &settings.asn_db)?;
        let anonymous = database(Role::Anonymous, &settings.anonymous_db)?;
        let listed_asns = settings
            .non_residential_asns_file
            .as_deref()
            .map(|path| Watched::open(ASN_LIST_SETTING, "asn_list", path, read_asn_list))
            .transpose()?;
        let listed_networks = settings
            .non_residential_networks_file
            .as_deref()
            .map(|path| Watched::open(NETWORK_LIST_SETTING, "network_list", path, read_network_list))
            .transpose()?;
        Ok(GeoIp { country, asn, anonymous, listed_asns, listed_networks, metrics })
    }

    /// No GeoIP data at all: every lookup answers "unknown".
    pub fn disabled(metrics: GeoIpMetrics) -> GeoIp {
        GeoIp { country: None, asn: None, anonymous: None, listed_asns: None, listed_networks: None, metrics }
    }

    pub fn has_country(&self) -> bool {
        self.country.is_some()
    }

    pub fn has_asn(&self) -> bool {
        self.asn.is_some()
    }

    /// Whether anything can call an address non-residential: the anonymous-IP database or
    /// either list.
    pub fn has_non_residential(&self) -> bool {
        self.anonymous.is_some() || self.listed_asns.is_some() || self.listed_networks.is_some()
    }

    /// The country `ip` is in: `country.iso_code`, else `registered_country.iso_code`, else a
    /// flat `country_code` (ip-location-db). `None` if no country database is configured, the
    /// address is not in it, or the lookup failed (counted as an error).
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        self.country
            .as_ref()?
            .lookup(|reader| Ok(decode::<CountryRecord>(reader, ip)?.and_then(|record| record.country())))
    }

    /// The AS number `ip` is announced from, like `country`.
    pub fn asn(&self, ip: IpAddr) -> Option<u32> {
        self.asn
            .as_ref()?
            .lookup(|reader| Ok(decode::<AsnRecord>(reader, ip)?.and_then(|record| record.autonomous_system_number)))
    }

    /// The English name of the country `ip` is in, as the country database writes it
    /// (GeoLite2's `country.names.en`, else the registered country's), for people to read.
    pub fn country_name(&self, ip: IpAddr) -> Option<String> {
        self.country.as_ref()?.lookup(|reader| {
            Ok(decode::<CountryNames>(reader, ip)?.and_then(|record| {
                [record.country, record.registered_country]
                    .into_iter()
                    .flatten()
                    .find_map(|named| named.names.and_then(|names| names.en))
                    .map(str::to_string)
            }))
        })
    }

    /// The organisation the ASN database names for the AS `ip` is announced from.
    pub fn as_organisation(&self, ip: IpAddr) -> Option<String> {
        self.asn.as_ref()?.lookup(|reader| {
            Ok(decode::<AsnName>(reader, ip)?
                .and_then(|record| record.autonomous_system_organization.map(str::to_string)))
        })
    }

    /// Why `ip` is not residential, checking the anonymous-IP database, then the AS list (with
    /// the ASN database), then the network list. `None`: residential, or nothing is known.
    pub fn non_residential(&self, ip: IpAddr) -> Option<NonResidential> {
        let flagged = self.anonymous.as_ref().and_then(|database| {
            database.lookup(|reader| Ok(decode::<AnonymousRecord>(reader, ip)?.and_then(|record| record.kind())))
        });
        if let Some(kind) = flagged {
            return Some(NonResidential::Anonymous(kind));
        }
        if let Some(list) = &self.listed_asns {
            let listed = list.current.load();
            if !listed.is_empty()
                && let Some(asn) = self.asn(ip)
                && listed.contains(&asn)
            {
                return Some(NonResidential::ListedAsn(asn));
            }
        }
        if let Some(list) = &self.listed_networks
            && list.current.load().longest_match(ip).is_some()
        {
            return Some(NonResidential::ListedNetwork);
        }
        None
    }

    /// Re-opens every database and re-reads every list whose file changed on disk (another
    /// inode, size or modification time), returning how many it replaced. A file that is now
    /// missing or broken leaves the one in use in place, and is logged and counted once, not
    /// again until it changes.
    pub fn refresh(&self) -> usize {
        let databases = [&self.country, &self.asn, &self.anonymous];
        let reopened = databases.into_iter().flatten().filter(|database| database.refresh(&self.metrics)).count();
        let asns_reread = self.listed_asns.as_ref().is_some_and(|list| {
            list.refresh(read_asn_list, &self.metrics.reloads)
                .inspect(|asns| log_list_reread(list, asns.len()))
                .is_some()
        });
        let networks_reread = self.listed_networks.as_ref().is_some_and(|list| {
            list.refresh(read_network_list, &self.metrics.reloads)
                .inspect(|networks| log_list_reread(list, networks.len()))
                .is_some()
        });
        reopened + usize::from(asns_reread) + usize::from(networks_reread)
    }

    /// The databases in use, one for each configured mmdb.
    pub fn databases(&self) -> Vec<DatabaseInfo> {
        [&self.country, &self.asn, &self.anonymous]
            .into_iter()
            .flatten()
            .map(|database| {
                let reader = database.file.current.load();
                DatabaseInfo {
                    name: database.role.name(),
                    path: database.file.path.clone(),
                    database_type: reader.metadata().database_type.clone(),
                    build_epoch: reader.metadata().build_epoch,
                }
            })
            .collect()
    }
}

fn log_list_reread<T>(list: &Watched<T>, entries: usize) {
    tracing::info!(
        setting = list.setting,
        path = %list.path.display(),
        entries,
        "GeoIP list re-read after it changed on disk"
    );
}

/// What a database setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Country,
    Asn,
    Anonymous,
}

impl Role {
    /// The metrics' `database` label.
    fn name(self) -> &'static str {
        match self {
            Role::Country => "country",
            Role::Asn => "asn",
            Role::Anonymous => "anonymous",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Role::Country => "geoip.country_db",
            Role::Asn => "geoip.asn_db",
            Role::Anonymous => "geoip.anonymous_db",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Role::Country => "a country database such as GeoLite2-Country",
            Role::Asn => "an ASN database such as GeoLite2-ASN",
            Role::Anonymous => "an anonymous-IP database such as GeoIP2-Anonymous-IP",
        }
    }

    fn holds(self) -> &'static str {
        match self {
            Role::Country => "countries",
            Role::Asn => "AS numbers",
            Role::Anonymous => "anonymizer flags",
        }
    }

    fn lacks(self) -> &'static str {
        match self {
            Role::Country => "its records have no country code",
            Role::Asn => "its records have no autonomous_system_number",
            Role::Anonymous => "its records have no is_anonymous flags",
        }
    }

    /// What a database holds, judged loosely by the `database_type` in its metadata, since
    /// vendors name them differently (`GeoLite2-Country`, `DBIP-Country-Lite`,
    /// `DBIP-ASN-Lite (compat=GeoLite2-ASN)`, `GeoIP2-Anonymous-IP`...). A City or Enterprise
    /// database has countries too. `None`: the name does not say.
    fn of_database_type(database_type: &str) -> Option<Role> {
        let name = database_type.to_ascii_lowercase();
        let says = |word: &str| name.contains(word);
        if says("anonymous") {
            Some(Role::Anonymous)
        } else if says("country") || says("city") || says("enterprise") {
            Some(Role::Country)
        } else if says("asn") || says("-isp") {
            Some(Role::Asn)
        } else {
            None
        }
    }

    /// For a database whose name does not say what it holds: whether its first records have
    /// what this role reads.
    fn answered_by(self, reader: &Reader<Mmap>) -> bool {
        const RECORDS_TRIED: usize = 16;
        let Ok(networks) = reader.networks(Default::default()) else {
            return false;
        };
        networks.flatten().take(RECORDS_TRIED).any(|found| {
            let answered = match self {
                Role::Country => {
                    found.decode::<CountryRecord>().map(|record| record.and_then(|r| r.country()).is_some())
                }
                Role::Asn => {
                    found.decode::<AsnRecord>().map(|record| record.and_then(|r| r.autonomous_system_number).is_some())
                }
                Role::Anonymous => {
                    found.decode::<AnonymousRecord>().map(|record| record.and_then(|r| r.kind()).is_some())
                }
            };
            answered.unwrap_or(false)
        })
    }
}

/// A country record's fields that we read, borrowed from the mapped file. GeoLite2, GeoIP2 and
/// DB-IP put the code in `country.iso_code`; some networks (e.g. satellite providers) only
/// have `registered_country`; ip-location-db's files have a flat `country_code`. Other fields
/// (names in eight languages, continent...) are skipped, not decoded.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

/// The names in a country record; only the English one is read.
#[derive(Deserialize)]
struct CountryNames<'a> {
    #[serde(borrow)]
    country: Option<Named<'a>>,
    #[serde(borrow)]
    registered_country: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    names: Option<English<'a>>,
}

#[derive(Deserialize)]
struct English<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct AsnName<'a> {
    autonomous_system_organization: Option<&'a str>,
}

impl<'a> CountryRecord<'a> {
    fn country(&self) -> Option<CountryCode> {
        let iso_code = |field: Option<&IsoCode<'a>>| field.and_then(|c| c.iso_code);
        [iso_code(self.country.as_ref()), iso_code(self.registered_country.as_ref()), self.country_code]
            .into_iter()
            .flatten()
            .find_map(CountryCode::parse)
    }
}

#[derive(Deserialize)]
struct AsnRecord {
    /// Any unsigned width: MaxMind writes a uint32, other tools may not.
    #[serde(default, deserialize_with = "any_unsigned")]
    autonomous_system_number: Option<u32>,
}

fn any_unsigned<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    struct AnyUnsigned;
    impl Visitor<'_> for AnyUnsigned {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an AS number")
        }
        fn visit_u64<E>(self, value: u64) -> Result<Option<u32>, E> {
            Ok(u32::try_from(value).ok())
        }
        fn visit_u128<E>(self, value: u128) -> Result<Option<u32>, E> {
            Ok(u32::try_from(value).ok())
        }
        fn visit_i64<E>(self, value: i64) -> Result<Option<u32>, E> {
            Ok(u32::try_from(value).ok())
        }
    }
    deserializer.deserialize_any(AnyUnsigned)
}

/// The GeoIP2 Anonymous IP flags; MaxMind stores only those that are true.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AnonymousRecord {
    is_anonymous: bool,
    is_anonymous_vpn: bool,
    is_hosting_provider: bool,
    is_public_proxy: bool,
    is_residential_proxy: bool,
    is_tor_exit_node: bool,
}

impl AnonymousRecord {
    /// The most specific flag set. MaxMind flags many VPN and Tor ranges as hosting too, and
    /// sets `is_anonymous` with every other flag, so those two come last.
    fn kind(&self) -> Option<AnonymousKind> {
        [
            (self.is_tor_exit_node, AnonymousKind::TorExit),
            (self.is_public_proxy, AnonymousKind::PublicProxy),
            (self.is_residential_proxy, AnonymousKind::ResidentialProxy),
            (self.is_anonymous_vpn, AnonymousKind::Vpn),
            (self.is_hosting_provider, AnonymousKind::Hosting),
            (self.is_anonymous, AnonymousKind::Anonymous),
        ]
        .into_iter()
        .find_map(|(set, kind)| set.then_some(kind))
    }
}

/// Looks `ip` up and decodes its record, borrowing from the mapped file. An IPv4-mapped IPv6
/// address is looked up as IPv4 (it is one client), and an IPv6 address in an IPv4-only
/// database (ip-location-db ships those) is simply not there.
fn decode<'de, R: Deserialize<'de>>(reader: &'de Reader<Mmap>, ip: IpAddr) -> Result<Option<R>, MaxMindDbError> {
    let ip = ip.to_canonical();
    if ip.is_ipv6() && reader.metadata().ip_version == 4 {
        return Ok(None);
    }
    reader.lookup(ip)?.decode()
}

/// A configured database and its lookup counters.
struct Database {
    role: Role,
    file: Watched<Reader<Mmap>>,
    /// Resolved once: finding a labelled counter on every lookup would hash its labels.
    found: IntCounter,
    not_found: IntCounter,
    error: IntCounter,
}

impl Database {
    fn open(role: Role, path: &Path, metrics: &GeoIpMetrics) -> Result<Database, GeoIpError> {
        let file = Watched::open(role.setting(), role.name(), path, |path| open_database(role, path))?;
        let counter = |result| metrics.lookups.with_label_values(&[role.name(), result]);
        let database =
            Database { role, found: counter("found"), not_found: counter("not_found"), error: counter("error"), file };
        database.opened(metrics, "GeoIP database opened");
        Ok(database)
    }

    /// Logs the database now in use and publishes its build time.
    fn opened(&self, metrics: &GeoIpMetrics, message: &str) {
        let reader = self.file.current.load();
        let metadata = reader.metadata();
        metrics
            .build_timestamp
            .with_label_values(&[self.role.name()])
            .set(i64::try_from(metadata.build_epoch).unwrap_or(i64::MAX));
        tracing::info!(
            setting = self.role.setting(),
            path = %self.file.path.display(),
            database_type = %metadata.database_type,
            build_epoch = metadata.build_epoch,
            "{message}"
        );
        if metadata.ip_version == 4 {
            tracing::warn!(
                setting = self.role.setting(),
                path = %self.file.path.display(),
                "an IPv4-only database: IPv6 addresses will not be found in it"
            );
        }
    }

    fn refresh(&self, metrics: &GeoIpMetrics) -> bool {
        let reopened = self.file.refresh(|path| open_database(self.role, path), &metrics.reloads).is_some();
        if reopened {
            self.opened(metrics, "GeoIP database re-opened after it changed on disk");
        }
        reopened
    }

    /// Runs one lookup against the database in use and counts its outcome. A failed lookup
    /// (a corrupt record) is logged at debug level only, as it may repeat on every login.
    fn lookup<T>(&self, find: impl FnOnce(&Reader<Mmap>) -> Result<Option<T>, MaxMindDbError>) -> Option<T> {
        let reader = self.file.current.load();
        match find(&reader) {
            Ok(Some(answer)) => {
                self.found.inc();
                Some(answer)
            }
            Ok(None) => {
                self.not_found.inc();
                None
            }
            Err(error) => {
                self.error.inc();
                tracing::debug!(database = self.role.name(), %error, "GeoIP lookup failed");
                None
            }
        }
    }
}

/// Maps a database file and checks that it holds what `role` needs.
fn open_database(role: Role, path: &Path) -> Result<Loaded<Reader<Mmap>>, GeoIpError> {
    let setting = role.setting();
    let (file, version) = open_file(setting, path)?;
    // SAFETY: the mapping is read-only and we never write the file. Mapping is sound only if
    // nobody else changes it either: geoipupdate replaces a database by renaming a new file
    // over it, which leaves the mapped inode intact until we drop the mapping, and the module
    // documentation requires the same of anything else that updates these files (a file
    // truncated in place would fault a lookup that reads past its new end).
    let mapped = unsafe { Mmap::map(&file) }.map_err(|source| GeoIpError::Unreadable {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    let reader = Reader::from_source(mapped).map_err(|source| GeoIpError::NotAnMmdb {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    let database_type = &reader.metadata().database_type;
    let holds = match Role::of_database_type(database_type) {
        Some(holds) if holds == role => None,
        Some(other) => Some(other.holds()),
        None if role.answered_by(&reader) => None,
        None => Some(role.lacks()),
    };
    if let Some(holds) = holds {
        return Err(GeoIpError::WrongDatabaseType {
            setting,
            path: path.to_path_buf(),
            database_type: database_type.clone(),
            holds,
            expected: role.expected(),
        });
    }
    Ok(Loaded { value: reader, version })
}

fn read_asn_list(path: &Path) -> Result<Loaded<HashSet<u32>>, GeoIpError> {
    let (text, version) = read_list(ASN_LIST_SETTING, path)?;
    let mut asns = HashSet::new();
    for (line, entry) in list_entries(&text) {
        let digits = match entry.get(..2) {
            Some(prefix) if prefix.eq_ignore_ascii_case("AS") => &entry[2..],
            _ => entry,
        };
        let asn = digits.parse::<u32>().map_err(|_| GeoIpError::BadLine {
            setting: ASN_LIST_SETTING,
            path: path.to_path_buf(),
            line,
            reason: format!("{entry:?} is not an AS number (expected e.g. AS16509 or 16509)"),
        })?;
        asns.insert(asn);
    }
    Ok(Loaded { value: asns, version })
}

fn read_network_list(path: &Path) -> Result<Loaded<NetworkMap<()>>, GeoIpError> {
    let (text, version) = read_list(NETWORK_LIST_SETTING, path)?;
    let mut networks = NetworkMap::default();
    for (line, entry) in list_entries(&text) {
        let network = parse_network(entry).map_err(|e| GeoIpError::BadLine {
            setting: NETWORK_LIST_SETTING,
            path: path.to_path_buf(),
            line,
            reason: e.to_string(),
        })?;
        networks.insert(network, ());
    }
    Ok(Loaded { value: networks, version })
}

fn read_list(setting: &'static str, path: &Path) -> Result<(String, FileVersion), GeoIpError> {
    let (mut file, version) = open_file(setting, path)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|source| GeoIpError::Unreadable {
        setting,
        path: path.to_path_buf(),
        source,
    })?;
    Ok((text, version))
}

/// The non-blank entries of a list file, without `#` comments, with their line numbers.
fn list_entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(index, line)| {
        let entry = line.split('#').next().unwrap_or_default().trim();
        (!entry.is_empty()).then_some((index + 1, entry))
    })
}

/// Opens a file and tells which version of it was opened: taken from the open file, not the
/// path, so a replacement that lands in between is seen by the next refresh.
fn open_file(setting: &'static str, path: &Path) -> Result<(File, FileVersion), GeoIpError> {
    let unreadable = |source| GeoIpError::Unreadable { setting, path: path.to_path_buf(), source };
    let file = File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if metadata.is_dir() {
        return Err(unreadable(io::Error::new(io::ErrorKind::IsADirectory, "it is a directory")));
    }
    Ok((file, FileVersion::of(&metadata)))
}

/// What tells one version of a file from the next: geoipupdate's rename gives a new inode,
/// an in-place edit of a list changes the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<SystemTime>,
}

impl FileVersion {
    fn of(metadata: &fs::Metadata) -> FileVersion {
        FileVersion {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }

    fn of_path(path: &Path) -> Option<FileVersion> {
        fs::metadata(path).ok().map(|metadata| FileVersion::of(&metadata))
    }
}

/// What was read from a file, and which version of the file it was.
struct Loaded<T> {
    value: T,
    version: FileVersion,
}

/// A file that `refresh` re-reads when it changes on disk, and what was read from it.
struct Watched<T> {
    setting: &'static str,
    /// The `database` label of its reload metric.
    label: &'static str,
    path: PathBuf,
    /// What lookups use. Replaced whole, so a lookup that loaded the old value finishes with
    /// it (and keeps an old mapping alive until then).
    current: ArcSwap<T>,
    /// The version of the file last tried, whether it loaded or not, so that a broken
    /// replacement is reported once rather than on every refresh (`None`: it was missing).
    /// Held while re-reading, so two refreshes racing do not both re-read the same change.
    last_tried: Mutex<Option<FileVersion>>,
}

impl<T> Watched<T> {
    fn open(
        setting: &'static str,
        label: &'static str,
        path: &Path,
        load: impl FnOnce(&Path) -> Result<Loaded<T>, GeoIpError>,
    ) -> Result<Watched<T>, GeoIpError> {
        let loaded = load(path)?;
        Ok(Watched {
            setting,
            label,
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(loaded.value),
            last_tried: Mutex::new(Some(loaded.version)),
        })
    }

    /// Re-reads the file if it changed since it was last tried, returning what replaced the
    /// value in use.
    fn refresh(
        &self,
        load: impl FnOnce(&Path) -> Result<Loaded<T>, GeoIpError>,
        reloads: &IntCounterVec,
    ) -> Option<Arc<T>> {
        let mut last_tried = self.last_tried.lock().unwrap_or_else(PoisonError::into_inner);
        let on_disk = FileVersion::of_path(&self.path);
        if on_disk == *last_tried {
            return None;
        }
        *last_tried = on_disk;
        match load(&self.path) {
            Ok(loaded) => {
                *last_tried = Some(loaded.version);
                let value = Arc::new(loaded.value);
                self.current.store(Arc::clone(&value));
                reloads.with_label_values(&[self.label, "success"]).inc();
                Some(value)
            }
            Err(error) => {
                reloads.with_label_values(&[self.label, "failure"]).inc();
                tracing::warn!(
                    setting = self.setting,
                    %error,
                    "GeoIP file changed on disk but cannot be used; the one loaded before stays in use"
                );
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(dead_code)]
mod fixtures {
    // The fixture generator is shared with the integration tests, which know this library as
    // `mailwarden`. `include!`, unlike a `#[path]` module, puts this alias in its scope.
    use crate as mailwarden;
    include!("../tests/support/geoip.rs");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use mmdb_writer::{IpVersion, Value, Writer};

    use super::fixtures::{self, FixturePaths};
    use super::*;

    /// The fixture files in a temporary folder, deleted when this is dropped, and a `GeoIp`
    /// opened on them with its own metrics.
    struct Fixture {
        _dir: tempfile::TempDir,
        paths: FixturePaths,
        geoip: GeoIp,
        metrics: GeoIpMetrics,
    }

    fn metrics() -> GeoIpMetrics {
        crate::metrics::Metrics::new().unwrap().geoip
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let paths = fixtures::write_fixtures(dir.path());
        let metrics = metrics();
        let geoip = GeoIp::open(&fixtures::settings(&paths), metrics.clone()).unwrap();
        Fixture { _dir: dir, paths, geoip, metrics }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn country(geoip: &GeoIp, address: &str) -> Option<String> {
        geoip.country(ip(address)).map(|code| code.to_string())
    }

    fn open_error(settings: &GeoIpSettings) -> String {
        GeoIp::open(settings, metrics()).unwrap_err().to_string()
    }

    fn lookups(metrics: &GeoIpMetrics, database: &str, result: &str) -> u64 {
        metrics.lookups.with_label_values(&[database, result]).get()
    }

    fn reloads(metrics: &GeoIpMetrics, database: &str, result: &str) -> u64 {
        metrics.reloads.with_label_values(&[database, result]).get()
    }

    #[test]
    fn country_codes_parse_two_letters_in_either_case() {
        assert_eq!(CountryCode::parse("fr").unwrap().as_str(), "FR");
        assert_eq!(CountryCode::parse("Cn").unwrap().to_string(), "CN");
        for bad in ["", "F", "FRA", "F1", "é", "ÉÉ", " FR"] {
            assert_eq!(CountryCode::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn countries_are_found_for_every_fixture_range_over_ipv4_and_ipv6() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        for (address, expected) in [
            ("203.0.113.9", "FR"),
            ("198.51.100.200", "CN"),
            ("192.0.2.1", "US"),
            ("2001:db8:f::1", "FR"),
            ("2001:db8:f:ffff::2", "FR"),
            ("2001:db8:c::1", "CN"),
            ("100.64.0.7", "BE"),
            ("100.64.1.7", "DE"),
            ("127.0.0.5", "CN"),
            ("127.0.0.6", "FR"),
        ] {
            assert_eq!(country(geoip, address).as_deref(), Some(expected), "{address}");
        }
    }

    #[test]
    fn as_numbers_are_found_for_every_fixture_range() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        for (address, expected) in [
            ("203.0.113.9", 64500),
            ("198.51.100.1", 64501),
            ("192.0.2.1", 64502),
            ("2001:db8:f::1", 64500),
            ("2001:db8:c::1", 64501),
            ("100.64.0.7", 64510),
        ] {
            assert_eq!(geoip.asn(ip(address)), Some(expected), "{address}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_looked_up_as_ipv4() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        assert_eq!(country(geoip, "::ffff:203.0.113.9").as_deref(), Some("FR"));
        assert_eq!(geoip.asn(ip("::ffff:198.51.100.1")), Some(64501));
        assert_eq!(
            geoip.non_residential(ip("::ffff:192.0.2.1")),
            Some(NonResidential::Anonymous(AnonymousKind::Hosting))
        );
        assert_eq!(geoip.non_residential(ip("::ffff:100.64.1.7")), Some(NonResidential::ListedNetwork));
    }

    #[test]
    fn an_ipv4_only_database_answers_mapped_addresses_and_knows_no_ipv6() {
        // ip-location-db ships separate IPv4 and IPv6 files with a flat country_code.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipv4-country.mmdb");
        let mut writer = Writer::builder("ip-location-db-country").ip_version(IpVersion::V4).build();
        writer
            .insert_value("203.0.113.0/24".parse::<ipnet::IpNet>().unwrap(), Value::map([("country_code", "FR")]))
            .unwrap();
        std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        let metrics = metrics();
        let settings = GeoIpSettings { country_db: Some(path), ..GeoIpSettings::default() };
        let geoip = GeoIp::open(&settings, metrics.clone()).unwrap();
        assert_eq!(country(&geoip, "203.0.113.9").as_deref(), Some("FR"));
        assert_eq!(country(&geoip, "::ffff:203.0.113.9").as_deref(), Some("FR"));
        assert_eq!(country(&geoip, "2001:db8:f::1"), None);
        assert_eq!(lookups(&metrics, "country", "error"), 0);
    }

    #[test]
    fn a_record_without_a_country_falls_back_to_the_registered_country() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoIP2-Country.mmdb");
        let registered_only = Value::map([("registered_country", Value::map([("iso_code", "SE")]))]);
        fixtures::write_mmdb(&path, "GeoIP2-Country", &[("198.18.0.0/24", registered_only)], 1);
        let settings = GeoIpSettings { country_db: Some(path), ..GeoIpSettings::default() };
        let geoip = GeoIp::open(&settings, metrics()).unwrap();
        assert_eq!(country(&geoip, "198.18.0.1").as_deref(), Some("SE"));
    }

    #[test]
    fn addresses_in_no_database_are_unknown() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        for address in ["10.1.2.3", "127.0.0.1", "127.0.0.7", "2001:db8:e::1", "::1"] {
            assert_eq!(country(geoip, address), None, "{address}");
            assert_eq!(geoip.asn(ip(address)), None, "{address}");
            assert_eq!(geoip.non_residential(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn the_anonymous_database_flags_a_hosting_provider() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        assert_eq!(geoip.non_residential(ip("192.0.2.77")), Some(NonResidential::Anonymous(AnonymousKind::Hosting)));
    }

    #[test]
    fn the_most_specific_anonymizer_flag_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoIP2-Anonymous-IP.mmdb");
        let flags = |set: &[&str]| Value::map(set.iter().map(|flag| (*flag, true)));
        fixtures::write_mmdb(
            &path,
            "GeoIP2-Anonymous-IP",
            &[
                ("198.18.0.0/24", flags(&["is_anonymous", "is_hosting_provider", "is_tor_exit_node"])),
                ("198.18.1.0/24", flags(&["is_anonymous", "is_hosting_provider", "is_anonymous_vpn"])),
                ("198.18.2.0/24", flags(&["is_anonymous", "is_public_proxy"])),
                ("198.18.3.0/24", flags(&["is_anonymous", "is_residential_proxy"])),
                ("198.18.4.0/24", flags(&["is_anonymous"])),
            ],
            1,
        );
        let settings = GeoIpSettings { anonymous_db: Some(path), ..GeoIpSettings::default() };
        let geoip = GeoIp::open(&settings, metrics()).unwrap();
        for (address, kind) in [
            ("198.18.0.1", AnonymousKind::TorExit),
            ("198.18.1.1", AnonymousKind::Vpn),
            ("198.18.2.1", AnonymousKind::PublicProxy),
            ("198.18.3.1", AnonymousKind::ResidentialProxy),
            ("198.18.4.1", AnonymousKind::Anonymous),
        ] {
            assert_eq!(geoip.non_residential(ip(address)), Some(NonResidential::Anonymous(kind)), "{address}");
        }
    }

    #[test]
    fn an_address_whose_as_number_is_listed_is_non_residential() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        assert_eq!(geoip.non_residential(ip("100.64.0.7")), Some(NonResidential::ListedAsn(64510)));
    }

    #[test]
    fn an_address_in_a_listed_network_is_non_residential() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        assert_eq!(geoip.non_residential(ip("100.64.1.200")), Some(NonResidential::ListedNetwork));
    }

    #[test]
    fn residential_addresses_are_not_non_residential() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        for address in ["203.0.113.9", "198.51.100.1", "2001:db8:f::1", "100.64.2.1"] {
            assert_eq!(geoip.non_residential(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn an_asn_list_line_that_is_not_an_as_number_is_refused_naming_the_key_and_line() {
        let fixture = fixture();
        let paths = &fixture.paths;
        fixtures::write_file(&paths.asn_list, "# comment\nAS64510\n\nAmazon\n");
        let message = open_error(&fixtures::settings(paths));
        assert!(message.starts_with("geoip.non_residential_asns_file: "), "{message}");
        assert!(message.contains(&paths.asn_list.display().to_string()), "{message}");
        assert!(message.contains("line 4"), "{message}");
        assert!(message.contains("\"Amazon\""), "{message}");
    }

    #[test]
    fn a_network_list_line_that_is_not_a_network_is_refused_naming_the_key_and_line() {
        let fixture = fixture();
        let paths = &fixture.paths;
        fixtures::write_file(&paths.network_list, "100.64.1.0/24\n100.64.2.0/33 # typo\n");
        let message = open_error(&fixtures::settings(paths));
        assert!(message.starts_with("geoip.non_residential_networks_file: "), "{message}");
        assert!(message.contains(&paths.network_list.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn as_numbers_are_read_with_or_without_the_as_prefix() {
        let fixture = fixture();
        let paths = &fixture.paths;
        let loaded = read_asn_list(&paths.asn_list).unwrap();
        assert_eq!(loaded.value, HashSet::from([64510, 64511]));
    }

    #[test]
    fn an_asn_database_given_as_country_db_is_refused_naming_the_key() {
        let fixture = fixture();
        let paths = &fixture.paths;
        let settings = GeoIpSettings { country_db: Some(paths.asn.clone()), ..GeoIpSettings::default() };
        let message = open_error(&settings);
        assert!(message.starts_with("geoip.country_db: "), "{message}");
        assert!(message.contains(&paths.asn.display().to_string()), "{message}");
        assert!(message.contains("\"GeoLite2-ASN\""), "{message}");
        assert!(message.contains("not a country database"), "{message}");
    }

    #[test]
    fn a_country_database_given_as_asn_db_or_anonymous_db_is_refused() {
        let fixture = fixture();
        let paths = &fixture.paths;
        let as_asn = GeoIpSettings { asn_db: Some(paths.country.clone()), ..GeoIpSettings::default() };
        assert!(open_error(&as_asn).starts_with("geoip.asn_db: "));
        let as_anonymous = GeoIpSettings { anonymous_db: Some(paths.country.clone()), ..GeoIpSettings::default() };
        assert!(open_error(&as_anonymous).starts_with("geoip.anonymous_db: "));
    }

    #[test]
    fn a_database_of_unknown_type_is_judged_by_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let countries = dir.path().join("countries.mmdb");
        fixtures::write_mmdb(&countries, "Homemade", &[("203.0.113.0/24", Value::map([("country_code", "FR")]))], 1);
        let settings = GeoIpSettings { country_db: Some(countries.clone()), ..GeoIpSettings::default() };
        assert!(GeoIp::open(&settings, metrics()).is_ok());
        let as_asn = GeoIpSettings { asn_db: Some(countries), ..GeoIpSettings::default() };
        let message = open_error(&as_asn);
        assert!(message.contains("no autonomous_system_number"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_an_mmdb_is_refused_naming_the_key() {
        let fixture = fixture();
        let paths = &fixture.paths;
        for contents in ["", "this is not a database\n"] {
            fixtures::write_file(&paths.anonymous, contents);
            let message = open_error(&fixtures::settings(paths));
            assert!(message.starts_with("geoip.anonymous_db: "), "{message}");
            assert!(message.contains("is not a MaxMind DB"), "{message}");
        }
    }

    #[test]
    fn a_missing_file_is_refused_naming_the_key() {
        let fixture = fixture();
        let paths = &fixture.paths;
        std::fs::remove_file(&paths.network_list).unwrap();
        let message = open_error(&fixtures::settings(paths));
        assert!(message.starts_with("geoip.non_residential_networks_file: cannot read "), "{message}");
    }

    #[test]
    fn an_asn_list_without_an_asn_database_is_refused() {
        let fixture = fixture();
        let paths = &fixture.paths;
        let settings = GeoIpSettings { asn_db: None, ..fixtures::settings(paths) };
        let message = open_error(&settings);
        assert!(message.starts_with("geoip.non_residential_asns_file: "), "{message}");
        assert!(message.contains("geoip.asn_db is not set"), "{message}");
    }

    #[test]
    fn refresh_picks_up_a_country_database_replaced_by_rename() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        let paths = &fixture.paths;
        let metrics = &fixture.metrics;
        assert_eq!(geoip.refresh(), 0);
        fixtures::write_country_db(&paths.country, &[("203.0.113.0/24", "DE")], 1_800_000_000);
        assert_eq!(geoip.refresh(), 1);
        assert_eq!(country(geoip, "203.0.113.9").as_deref(), Some("DE"));
        assert_eq!(country(geoip, "198.51.100.1"), None);
        assert_eq!(reloads(metrics, "country", "success"), 1);
        let build_time = metrics.build_timestamp.with_label_values(&["country"]).get();
        assert_eq!(build_time, 1_800_000_000);
        assert_eq!(geoip.databases()[0].build_epoch, 1_800_000_000);
        assert_eq!(geoip.refresh(), 0);
    }

    #[test]
    fn refresh_keeps_the_old_database_when_the_replacement_is_corrupt() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        let paths = &fixture.paths;
        let metrics = &fixture.metrics;
        fixtures::write_file(&paths.country, "truncated download");
        assert_eq!(geoip.refresh(), 0);
        assert_eq!(country(geoip, "203.0.113.9").as_deref(), Some("FR"));
        assert_eq!(reloads(metrics, "country", "failure"), 1);
        assert_eq!(geoip.refresh(), 0);
        assert_eq!(reloads(metrics, "country", "failure"), 1, "reported once");

        std::fs::remove_file(&paths.country).unwrap();
        assert_eq!(geoip.refresh(), 0);
        assert_eq!(country(geoip, "203.0.113.9").as_deref(), Some("FR"));
        assert_eq!(reloads(metrics, "country", "failure"), 2);

        fixtures::write_country_db(&paths.country, &[("203.0.113.0/24", "IT")], 1);
        assert_eq!(geoip.refresh(), 1);
        assert_eq!(country(geoip, "203.0.113.9").as_deref(), Some("IT"));
    }

    #[test]
    fn refresh_rereads_changed_list_files_and_keeps_them_when_broken() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        let paths = &fixture.paths;
        let metrics = &fixture.metrics;
        fixtures::write_file(&paths.network_list, "198.51.100.0/24\n");
        fixtures::write_file(&paths.asn_list, "AS64500\n");
        assert_eq!(geoip.refresh(), 2);
        assert_eq!(geoip.non_residential(ip("198.51.100.1")), Some(NonResidential::ListedNetwork));
        assert_eq!(geoip.non_residential(ip("100.64.1.1")), None);
        assert_eq!(geoip.non_residential(ip("203.0.113.9")), Some(NonResidential::ListedAsn(64500)));
        assert_eq!(reloads(metrics, "network_list", "success"), 1);

        fixtures::write_file(&paths.network_list, "not a network\n");
        assert_eq!(geoip.refresh(), 0);
        assert_eq!(geoip.non_residential(ip("198.51.100.1")), Some(NonResidential::ListedNetwork));
        assert_eq!(reloads(metrics, "network_list", "failure"), 1);
    }

    #[test]
    fn lookups_in_flight_keep_answering_while_refresh_swaps_databases() {
        let fixture = fixture();
        let paths = &fixture.paths;
        let geoip = Arc::new(fixture.geoip);
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (geoip, stop) = (Arc::clone(&geoip), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut answered = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        let found = geoip.country(ip("203.0.113.9"));
                        assert!(matches!(found.map(|c| c.to_string()).as_deref(), Some("FR" | "DE")));
                        answered += 1;
                    }
                    answered
                })
            })
            .collect();
        for round in 0..20 {
            let iso_code = if round % 2 == 0 { "DE" } else { "FR" };
            fixtures::write_country_db(&paths.country, &[("203.0.113.0/24", iso_code)], round);
            assert_eq!(geoip.refresh(), 1);
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
    }

    #[test]
    fn lookups_are_counted_as_found_or_not_found() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        let metrics = &fixture.metrics;
        geoip.country(ip("203.0.113.9"));
        geoip.country(ip("203.0.113.10"));
        geoip.country(ip("10.0.0.1"));
        geoip.asn(ip("10.0.0.1"));
        assert_eq!(lookups(metrics, "country", "found"), 2);
        assert_eq!(lookups(metrics, "country", "not_found"), 1);
        assert_eq!(lookups(metrics, "asn", "not_found"), 1);
        assert_eq!(lookups(metrics, "asn", "found"), 0);
        assert_eq!(lookups(metrics, "country", "error"), 0);
    }

    #[test]
    fn disabled_geoip_knows_nothing() {
        let geoip = GeoIp::disabled(metrics());
        assert!(!geoip.has_country() && !geoip.has_asn() && !geoip.has_non_residential());
        assert_eq!(geoip.country(ip("203.0.113.9")), None);
        assert_eq!(geoip.asn(ip("203.0.113.9")), None);
        assert_eq!(geoip.non_residential(ip("192.0.2.1")), None);
        assert_eq!(geoip.refresh(), 0);
        assert!(geoip.databases().is_empty());
    }

    #[test]
    fn databases_describe_each_open_database() {
        let fixture = fixture();
        let geoip = &fixture.geoip;
        let paths = &fixture.paths;
        assert!(geoip.has_country() && geoip.has_asn() && geoip.has_non_residential());
        let described: Vec<_> = geoip
            .databases()
            .into_iter()
            .map(|info| (info.name, info.path, info.database_type, info.build_epoch))
            .collect();
        let epoch = fixtures::FIXTURE_BUILD_EPOCH;
        assert_eq!(
            described,
            [
                ("country", paths.country.clone(), "GeoLite2-Country".into(), epoch),
                ("asn", paths.asn.clone(), "GeoLite2-ASN".into(), epoch),
                ("anonymous", paths.anonymous.clone(), "GeoIP2-Anonymous-IP".into(), epoch),
            ]
        );
    }

    #[test]
    fn geoip_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<GeoIp>();
    }

    /// Cost of one country lookup against a GeoLite2-sized tree with GeoLite2-like records
    /// (names in eight languages). Run with
    /// `cargo test --release --lib geoip -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn country_lookup_cost() {
        const NETWORKS: u32 = 100_000;
        const LOOKUPS: u32 = 1_000_000;
        let names = |name: &str| Value::map(["de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"].map(|l| (l, name)));
        let place = |iso_code: &str| {
            Value::map([
                ("geoname_id", Value::from(3_017_382_u32)),
                ("is_in_european_union", Value::from(true)),
                ("iso_code", Value::from(iso_code)),
                ("names", names("France")),
            ])
        };
        let record = |iso_code: &str| {
            Value::map([
                ("continent", Value::map([("code", Value::from("EU")), ("names", names("Europe"))])),
                ("country", place(iso_code)),
                ("registered_country", place(iso_code)),
            ])
        };
        let codes = ["FR", "DE", "CN", "US", "BE", "IT", "ES", "NL"];
        let mut writer = Writer::new("GeoLite2-Country");
        // Spread /24s over the address space, one in every 41, 8 distinct records.
        let network = |i: u32| std::net::Ipv4Addr::from((i * 41) << 8);
        for i in 0..NETWORKS {
            let net = ipnet::Ipv4Net::new(network(i), 24).unwrap();
            writer.insert_value(net, record(codes[i as usize % codes.len()])).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-Country.mmdb");
        std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        let settings = GeoIpSettings { country_db: Some(path), ..GeoIpSettings::default() };
        let geoip = GeoIp::open(&settings, metrics()).unwrap();
        let addresses: Vec<IpAddr> = (0..1024_u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(u32::from(network(i * 97 % NETWORKS)) | 7)))
            .collect();
        let started = Instant::now();
        let mut found = 0_u32;
        for i in 0..LOOKUPS {
            found += u32::from(geoip.country(addresses[i as usize % addresses.len()]).is_some());
        }
        let elapsed = started.elapsed();
        assert_eq!(found, LOOKUPS);
        println!("{LOOKUPS} country lookups in {elapsed:?}: {} ns/lookup", elapsed.as_nanos() / u128::from(LOOKUPS));
    }
}
