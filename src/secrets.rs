//! The two shared secrets: the API key Dovecot presents and the admin token the CLI and
//! scripts present. They are compared in constant time, never printed (`Debug` masks them),
//! and when policy.toml leaves them empty they are generated once into `state_dir` with mode
//! 0600, so the shipped policy.toml carries no secret and still runs.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// How Dovecot and the admin API authenticate (`[auth]`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Empty in the file means "generate one into state_dir on first start".
    pub api_key: Option<Secret>,
    pub api_key_header: String,
    pub admin_token: Option<Secret>,
}

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: &str) -> Secret {
        Secret(value.to_string())
    }

    /// Constant-time comparison, so response timing reveals nothing about the secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The value itself, for the one place that must send it (the CLI's Authorization header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "auth.{name} is empty and {path} does not exist: set auth.{name} in the configuration, or start the server once to generate it"
    )]
    Missing { name: &'static str, path: PathBuf },
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is empty or shorter than 16 characters")]
    TooShort { path: PathBuf },
    #[error("cannot get random bytes for a new secret: {0}")]
    Random(String),
}

/// Whether a missing secret may be created (the server) or must already exist (the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Generate,
    Fail,
}

pub fn secret_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name)
}

/// Fills `auth.api_key` and `auth.admin_token` from `state_dir` when the configuration left
/// them empty.
pub fn resolve(auth: &mut AuthSettings, state_dir: &Path, missing: Missing) -> Result<(), SecretError> {
    if auth.api_key.is_none() {
        auth.api_key = Some(load_or_create(state_dir, "api_key", missing)?);
    }
    if auth.admin_token.is_none() {
        auth.admin_token = Some(load_or_create(state_dir, "admin_token", missing)?);
    }
    Ok(())
}

fn load_or_create(dir: &Path, name: &'static str, missing: Missing) -> Result<Secret, SecretError> {
    let path = secret_path(dir, name);
    let io_error = |source| SecretError::Io { path: path.clone(), source };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let value = text.trim();
            if value.len() < 16 {
                return Err(SecretError::TooShort { path });
            }
            Ok(Secret::new(value))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && missing == Missing::Generate => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
            let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            crate::state_dir::create(dir).map_err(io_error)?;
            write_private(&path, &value).map_err(io_error)?;
            tracing::warn!(path = %path.display(), "generated a new auth.{name}; read it from that file");
            Ok(Secret::new(&value))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SecretError::Missing { name, path }),
        Err(e) => Err(io_error(e)),
    }
}

fn write_private(path: &Path, value: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_needs_the_exact_bytes() {
        let secret = Secret::new("0123456789abcdef");
        assert!(secret.matches(b"0123456789abcdef"));
        assert!(!secret.matches(b"0123456789abcde"));
        assert!(!secret.matches(b"0123456789abcdeF"));
        assert!(!secret.matches(b""));
        assert_eq!(format!("{secret:?}"), "Secret(********)");
    }

    #[test]
    fn generated_secrets_are_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), "api_key", Missing::Generate).unwrap();
        let second = load_or_create(dir.path(), "api_key", Missing::Fail).unwrap();
        assert_eq!(first.expose(), second.expose());
        assert_eq!(first.expose().len(), 48);
        let mode = fs::metadata(dir.path().join("api_key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = load_or_create(dir.path(), "admin_token", Missing::Fail).unwrap_err();
        assert!(err.to_string().contains("auth.admin_token is empty"), "{err}");
    }
}
