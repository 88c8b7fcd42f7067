// GeoIP test fixtures: three small MaxMind DB files and the two non-residential list files,
// written by code with the `mmdb-writer` crate (never downloaded), with known contents that
// tests can rely on.
//
// | Network           | country (GeoLite2-Country) | ASN (GeoLite2-ASN) | non-residential                 |
// |-------------------|----------------------------|--------------------|---------------------------------|
// | 203.0.113.0/24    | FR                         | 64500              | no (a residential ISP)          |
// | 198.51.100.0/24   | CN                         | 64501              | no                              |
// | 192.0.2.0/24      | US                         | 64502              | Anonymous(Hosting): anonymous db|
// | 2001:db8:f::/48   | FR                         | 64500              | no                              |
// | 2001:db8:c::/48   | CN                         | 64501              | no                              |
// | 100.64.0.0/24     | BE                         | 64510              | ListedAsn(64510): ASN list      |
// | 100.64.1.0/24     | DE                         | none               | ListedNetwork: network list     |
// | 127.0.0.5/32      | CN                         | none               | no                              |
// | 127.0.0.6/32      | FR                         | none               | no                              |
// | 10.0.0.0/8, the rest of 127.0.0.0/8 and everything else: in no database (unknown)      |
//
// The anonymous db ("GeoIP2-Anonymous-IP") holds only 192.0.2.0/24, flagged `is_anonymous`
// and `is_hosting_provider` as MaxMind flags a hosting range. The ASN list holds AS64510 and
// 64511 (the second written without the `AS` prefix; no database maps an address to it); the
// network list holds 100.64.1.0/24. Every database is an IPv6 database with IPv4 reachable
// through the IPv4-mapped alias too, as MaxMind builds them, and was built at
// `FIXTURE_BUILD_EPOCH`. Country records have GeoLite2-Country's layout (continent, country
// and registered_country, each with names), ASN records GeoLite2-ASN's.
//
// These are plain comments, not a `//!` doc comment, because `src/geoip.rs` reuses this file
// in its unit tests through `include!`, and an included file cannot carry inner attributes.
// It uses `include!` rather than `#[path]` so that it can bring this library into scope under
// the name integration tests know it by (`mailwarden`, the name `settings` uses): a `#[path]`
// module has no way to name the crate that works both inside the library and outside it
// (`cfg(test)` is set in both builds, so it cannot tell them apart).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{Value, Writer};

/// When every fixture database says it was built (its metadata's `build_epoch`).
pub const FIXTURE_BUILD_EPOCH: u64 = 1_700_000_000;

/// Countries by network, as the fixture country database holds them.
pub const FIXTURE_COUNTRIES: &[(&str, &str)] = &[
    ("203.0.113.0/24", "FR"),
    ("198.51.100.0/24", "CN"),
    ("192.0.2.0/24", "US"),
    ("2001:db8:f::/48", "FR"),
    ("2001:db8:c::/48", "CN"),
    ("100.64.0.0/24", "BE"),
    ("100.64.1.0/24", "DE"),
    ("127.0.0.5/32", "CN"),
    ("127.0.0.6/32", "FR"),
];

/// AS numbers and organisations by network, as the fixture ASN database holds them.
const FIXTURE_AS_NUMBERS: &[(&str, u32, &str)] = &[
    ("203.0.113.0/24", 64500, "Example Residential Broadband"),
    ("2001:db8:f::/48", 64500, "Example Residential Broadband"),
    ("198.51.100.0/24", 64501, "Example Carrier"),
    ("2001:db8:c::/48", 64501, "Example Carrier"),
    ("192.0.2.0/24", 64502, "Example Hosting"),
    ("100.64.0.0/24", 64510, "Example Cloud"),
];

/// Where `write_fixtures` put each file.
#[derive(Debug, Clone)]
pub struct FixturePaths {
    pub dir: PathBuf,
    pub country: PathBuf,
    pub asn: PathBuf,
    pub anonymous: PathBuf,
    pub asn_list: PathBuf,
    pub network_list: PathBuf,
}

/// Writes the three databases and two list files described at the top of this file into
/// `dir`, which must exist.
pub fn write_fixtures(dir: &Path) -> FixturePaths {
    let paths = FixturePaths {
        dir: dir.to_path_buf(),
        country: dir.join("GeoLite2-Country.mmdb"),
        asn: dir.join("GeoLite2-ASN.mmdb"),
        anonymous: dir.join("GeoIP2-Anonymous-IP.mmdb"),
        asn_list: dir.join("non-residential-asns.txt"),
        network_list: dir.join("non-residential-networks.txt"),
    };
    write_country_db(&paths.country, FIXTURE_COUNTRIES, FIXTURE_BUILD_EPOCH);
    let as_numbers: Vec<(&str, Value)> = FIXTURE_AS_NUMBERS
        .iter()
        .map(|&(network, number, organization)| {
            let record = Value::map([
                ("autonomous_system_number", Value::from(number)),
                ("autonomous_system_organization", Value::from(organization)),
            ]);
            (network, record)
        })
        .collect();
    write_mmdb(&paths.asn, "GeoLite2-ASN", &as_numbers, FIXTURE_BUILD_EPOCH);
    let hosting = Value::map([("is_anonymous", true), ("is_hosting_provider", true)]);
    write_mmdb(&paths.anonymous, "GeoIP2-Anonymous-IP", &[("192.0.2.0/24", hosting)], FIXTURE_BUILD_EPOCH);
    write_file(
        &paths.asn_list,
        "# AS numbers whose addresses are not residential (mailwarden test fixture)\n\
         AS64510\n\
         \n\
         64511   # the AS prefix is optional\n",
    );
    write_file(&paths.network_list, "# Networks that are not residential (mailwarden test fixture)\n100.64.1.0/24\n");
    paths
}

/// GeoIP settings naming all five fixture files.
pub fn settings(paths: &FixturePaths) -> mailwarden::geoip::GeoIpSettings {
    mailwarden::geoip::GeoIpSettings {
        country_db: Some(paths.country.clone()),
        asn_db: Some(paths.asn.clone()),
        anonymous_db: Some(paths.anonymous.clone()),
        non_residential_asns_file: Some(paths.asn_list.clone()),
        non_residential_networks_file: Some(paths.network_list.clone()),
    }
}

/// Writes a "GeoLite2-Country" database mapping each network (CIDR) to a country (ISO code),
/// replacing `path` the way geoipupdate does: written under a temporary name, then renamed
/// over the old file, so a reader that has the old one mapped keeps it intact.
pub fn write_country_db(path: &Path, entries: &[(&str, &str)], build_epoch: u64) {
    let records: Vec<(&str, Value)> =
        entries.iter().map(|&(network, iso_code)| (network, country_record(iso_code))).collect();
    write_mmdb(path, "GeoLite2-Country", &records, build_epoch);
}

/// Writes a MaxMind DB of `database_type` with one record per network (CIDR), replacing
/// `path` by rename.
pub fn write_mmdb(path: &Path, database_type: &str, records: &[(&str, Value)], build_epoch: u64) {
    let mut writer = Writer::builder(database_type).build_epoch(UNIX_EPOCH + Duration::from_secs(build_epoch)).build();
    for (network, record) in records {
        let network: IpNet = network.parse().unwrap_or_else(|e| panic!("fixture network {network:?}: {e}"));
        writer.insert_value(network, record.clone()).unwrap_or_else(|e| panic!("fixture network {network}: {e}"));
    }
    let bytes = writer.to_bytes().unwrap_or_else(|e| panic!("cannot build {database_type} fixture: {e}"));
    write_file_bytes(path, &bytes);
}

/// Replaces `path` with `contents` by writing a temporary file beside it and renaming it over
/// `path`, as geoipupdate and careful admins do.
pub fn write_file(path: &Path, contents: &str) {
    write_file_bytes(path, contents.as_bytes());
}

fn write_file_bytes(path: &Path, contents: &[u8]) {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}-{}", std::process::id(), unique_suffix()));
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", temporary.display()));
    fs::rename(&temporary, path).unwrap_or_else(|e| panic!("cannot rename over {}: {e}", path.display()));
}

/// Distinguishes temporary names when tests replace files from several threads.
fn unique_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A record in GeoLite2-Country's layout: the continent, the country where the network is
/// used and the country it is registered in (the same here), each with names.
fn country_record(iso_code: &str) -> Value {
    let (continent, continent_name, name) = match iso_code {
        "FR" => ("EU", "Europe", "France"),
        "BE" => ("EU", "Europe", "Belgium"),
        "DE" => ("EU", "Europe", "Germany"),
        "CN" => ("AS", "Asia", "China"),
        "US" => ("NA", "North America", "United States"),
        _ => ("AN", "Antarctica", iso_code),
    };
    let country = Value::map([("iso_code", Value::from(iso_code)), ("names", Value::map([("en", name)]))]);
    Value::map([
        ("continent", Value::map([("code", Value::from(continent)), ("names", Value::map([("en", continent_name)]))])),
        ("country", country.clone()),
        ("registered_country", country),
    ])
}
