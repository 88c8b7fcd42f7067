//! For tests: the README's generated sections (the settings table, the scope table) held equal
//! to what the code generates; `MAILWARDEN_BLESS=1 cargo test --lib the_readme` rewrites them.

use std::path::Path;

/// Checks that README.md holds `generated` between the `begin` and `end` markers, or, with
/// `MAILWARDEN_BLESS` set, writes it there.
pub fn check_generated_section(begin: &str, end: &str, generated: &str, what: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let start = readme.find(begin).unwrap_or_else(|| panic!("the README marks its {what}")) + begin.len();
    let stop = readme[start..].find(end).expect("the end marker") + start;
    if readme[start..stop] != *generated && std::env::var_os("MAILWARDEN_BLESS").is_some() {
        std::fs::write(&path, format!("{}{generated}{}", &readme[..start], &readme[stop..])).expect("write README.md");
        return;
    }
    let stale: Vec<&str> = generated.lines().filter(|line| !readme[start..stop].contains(line)).collect();
    assert!(
        readme[start..stop] == *generated,
        "the README's {what} is out of date (run MAILWARDEN_BLESS=1 cargo test --lib the_readme); new or changed rows: {stale:#?}"
    );
}
