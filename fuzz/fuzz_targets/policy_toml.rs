//! The policy.toml loader: any text must either load as a policy or be refused with errors,
//! never panic; a loaded policy must describe itself.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailwarden::config::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Policy::parse_str(text, Path::new("/nonexistent")) {
        Ok(policy) => {
            let _ = policy.describe();
        }
        Err(error) => assert!(!error.problems.is_empty(), "an error names at least one problem"),
    }
});
