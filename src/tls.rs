//! TLS for mailwarden's listeners and for its admin client (rustls with ring): certificates,
//! keys and client CAs read from the PEM files policy.toml names, served through a resolver and
//! a client verifier that a reload swaps, so a renewed certificate is served without a restart.
//! Not here: TLS to Redis (the redis crate's own, configured in `store`), and the policy
//! settings' parsing (`config` builds `TlsSettings`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoClientAuth, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

/// One listener's files: its certificate chain and key, and for the admin listener the CA
/// whose certificates clients must present (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// What the CLI presents and trusts when the admin listener speaks TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// The CA that signed the admin listener's certificate.
    pub ca: Option<PathBuf>,
    /// The CLI's own certificate and key, for an admin listener that requires one.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

/// `[tls]`: which listeners speak TLS, with which files. `None`: plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub policy: Option<ListenerFiles>,
    pub admin: Option<ListenerFiles>,
    pub public: Option<ListenerFiles>,
    pub client: ClientFiles,
}

/// The three listeners, each with the settings keys its files come from (errors name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Policy,
    Admin,
    Public,
}

impl Listener {
    pub const ALL: [Listener; 3] = [Listener::Policy, Listener::Admin, Listener::Public];

    /// The key of its certificate, which turns TLS on (`tls.policy_cert`).
    pub fn cert_key(self) -> &'static str {
        match self {
            Listener::Policy => "tls.policy_cert",
            Listener::Admin => "tls.admin_cert",
            Listener::Public => "tls.public_cert",
        }
    }

    pub fn key_key(self) -> &'static str {
        match self {
            Listener::Policy => "tls.policy_key",
            Listener::Admin => "tls.admin_key",
            Listener::Public => "tls.public_key",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl TlsSettings {
    pub fn files(&self, listener: Listener) -> Option<&ListenerFiles> {
        match listener {
            Listener::Policy => self.policy.as_ref(),
            Listener::Admin => self.admin.as_ref(),
            Listener::Public => self.public.as_ref(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read { key: &'static str, path: PathBuf, source: io::Error },
    #[error("{key}: {} is not usable: {message}", path.display())]
    Invalid { key: &'static str, path: PathBuf, message: String },
}

/// The one cryptographic provider everything here uses (ring), named explicitly because test
/// builds also link aws-lc-rs (through a dev-dependency), and rustls then has no default.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Makes ring the process-wide default, for the libraries that build their own rustls
/// configurations (redis, ureq). A second call changes nothing.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key, path: path.to_path_buf(), source })
}

/// The certificates of a PEM file, at least one.
pub fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid { key, path: path.to_path_buf(), message };
    let pem = read(key, path)?;
    let certs =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no PEM certificate in it (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        message: format!("no PEM private key in it ({e})"),
    })
}

fn roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(key, path)? {
        roots.add(cert).map_err(|e| TlsError::Invalid { key, path: path.to_path_buf(), message: e.to_string() })?;
    }
    Ok(roots)
}

/// A listener's certificate and client verifier, loaded and checked, not yet in force.
pub struct Loaded {
    certified: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Loaded {
    /// Reads and checks the files: the key must match the certificate, the CA must parse.
    pub fn read(listener: Listener, files: &ListenerFiles) -> Result<Loaded, TlsError> {
        let chain = read_certificates(listener.cert_key(), &files.cert)?;
        let key = read_private_key(listener.key_key(), &files.key)?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Invalid {
            key: listener.key_key(),
            path: files.key.clone(),
            message: format!("does not go with {} ({e})", files.cert.display()),
        })?;
        let verifier: Arc<dyn ClientCertVerifier> = match &files.client_ca {
            None => Arc::new(NoClientAuth),
            Some(path) => {
                let invalid = |message: String| TlsError::Invalid { key: CLIENT_CA_KEY, path: path.clone(), message };
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(CLIENT_CA_KEY, path)?), provider())
                    .build()
                    .map_err(|e| invalid(e.to_string()))?
            }
        };
        Ok(Loaded { certified: Arc::new(certified), verifier })
    }
}

const CLIENT_CA_KEY: &str = "tls.admin_client_ca";

/// What one TLS listener serves now; a reload replaces both parts.
struct Current {
    certified: ArcSwap<CertifiedKey>,
    verifier: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current")
    }
}

/// The certificate resolver and the client verifier of one listener: both read `Current` on
/// every handshake, so what a reload stores there is served from the next connection on.
#[derive(Debug, Clone)]
struct Swappable(Arc<Current>);

impl ResolvesServerCert for Swappable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified.load_full())
    }
}

impl ClientCertVerifier for Swappable {
    fn offer_client_auth(&self) -> bool {
        self.0.verifier.load().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.verifier.load().client_auth_mandatory()
    }

    /// No hints: they would have to borrow from a verifier a reload may replace, and the
    /// clients of the admin API (the CLI, Prometheus) present the one certificate they have.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verifier.load().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verifier.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verifier.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS state of the running listeners: for each one started with TLS, what it serves.
/// Whether a listener speaks TLS at all is fixed at start.
#[derive(Default)]
pub struct ListenersTls {
    current: [Option<Arc<Current>>; 3],
}

impl ListenersTls {
    /// Loads every configured listener's files (at start: an error stops the server).
    pub fn load(settings: &TlsSettings) -> Result<ListenersTls, TlsError> {
        let mut current: [Option<Arc<Current>>; 3] = Default::default();
        for listener in Listener::ALL {
            if let Some(files) = settings.files(listener) {
                let loaded = Loaded::read(listener, files)?;
                current[listener.index()] = Some(Arc::new(Current {
                    certified: ArcSwap::new(loaded.certified),
                    verifier: ArcSwap::from_pointee(loaded.verifier),
                }));
            }
        }
        Ok(ListenersTls { current })
    }

    /// Whether `listener` was started with TLS.
    pub fn speaks_tls(&self, listener: Listener) -> bool {
        self.current[listener.index()].is_some()
    }

    /// The rustls configuration of `listener`, or `None` when it speaks plain HTTP.
    pub fn server_config(&self, listener: Listener) -> Option<ServerConfig> {
        let current = self.current[listener.index()].as_ref()?;
        let swappable = Swappable(current.clone());
        // The builder fails only for a provider without the default protocol versions.
        let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().ok()?;
        Some(builder.with_client_cert_verifier(Arc::new(swappable.clone())).with_cert_resolver(Arc::new(swappable)))
    }

    /// Reads `settings`' files for every listener that speaks TLS, all before any is put in
    /// force: a broken file changes nothing and is the error. Returns the keys that would
    /// turn TLS on or off, which needs a restart.
    pub fn prepare(&self, settings: &TlsSettings) -> Result<Prepared, TlsError> {
        let mut loaded: [Option<Loaded>; 3] = Default::default();
        let mut restart_required = Vec::new();
        for listener in Listener::ALL {
            match (&self.current[listener.index()], settings.files(listener)) {
                (Some(_), Some(files)) => loaded[listener.index()] = Some(Loaded::read(listener, files)?),
                (None, None) => {}
                (Some(_), None) | (None, Some(_)) => restart_required.push(listener.cert_key()),
            }
        }
        Ok(Prepared { loaded, restart_required })
    }

    /// Puts what `prepare` read in force: the next handshake on each listener uses it.
    pub fn apply(&self, prepared: Prepared) {
        for (current, loaded) in self.current.iter().zip(prepared.loaded) {
            if let (Some(current), Some(loaded)) = (current, loaded) {
                current.certified.store(loaded.certified);
                current.verifier.store(Arc::new(loaded.verifier));
            }
        }
    }
}

/// The outcome of `ListenersTls::prepare`.
pub struct Prepared {
    loaded: [Option<Loaded>; 3],
    /// Listeners whose TLS was turned on or off in the file: their cert keys.
    pub restart_required: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1 and its key, written into `dir` as `name.pem`
    /// and `name.key`.
    fn pair(dir: &Path, name: &str) -> ListenerFiles {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let files = ListenerFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).expect("write");
        std::fs::write(&files.key, key.serialize_pem()).expect("write");
        files
    }

    fn served(tls: &ListenersTls, listener: Listener) -> Vec<u8> {
        let current = tls.current[listener.index()].as_ref().expect("a TLS listener");
        current.certified.load().cert[0].to_vec()
    }

    #[test]
    fn a_reload_with_one_broken_file_puts_no_listener_s_new_certificate_in_force() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = TlsSettings {
            policy: Some(pair(dir.path(), "policy")),
            admin: Some(pair(dir.path(), "admin")),
            ..TlsSettings::default()
        };
        let tls = ListenersTls::load(&settings).expect("loads");
        let (policy_before, admin_before) = (served(&tls, Listener::Policy), served(&tls, Listener::Admin));

        // Both renewed, but the admin key is cut short: nothing changes, and the error names it.
        pair(dir.path(), "policy");
        pair(dir.path(), "admin");
        std::fs::write(dir.path().join("admin.key"), "-----BEGIN PRIVATE KEY-----\n").expect("write");
        let error = tls.prepare(&settings).err().expect("refused").to_string();
        assert!(error.starts_with("tls.admin_key: ") && error.contains("admin.key"), "{error}");
        assert_eq!(served(&tls, Listener::Policy), policy_before, "the policy listener keeps its certificate too");
        assert_eq!(served(&tls, Listener::Admin), admin_before);

        // Mended: both new certificates are served together.
        let admin = pair(dir.path(), "admin");
        let prepared = tls.prepare(&settings).expect("reads");
        assert!(prepared.restart_required.is_empty());
        tls.apply(prepared);
        assert_ne!(served(&tls, Listener::Policy), policy_before);
        let renewed = read_certificates("tls.admin_cert", &admin.cert).expect("reads");
        assert_eq!(served(&tls, Listener::Admin), renewed[0].to_vec(), "the mended renewal is served");
    }

    #[test]
    fn a_key_that_is_not_the_certificate_s_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = pair(dir.path(), "first");
        let second = pair(dir.path(), "second");
        let mixed = ListenerFiles { cert: first.cert.clone(), key: second.key.clone(), client_ca: None };
        let error = Loaded::read(Listener::Public, &mixed).err().expect("refused").to_string();
        assert!(
            error.starts_with("tls.public_key: ") && error.contains("second.key") && error.contains("does not go with"),
            "{error}"
        );
        assert!(error.contains("first.pem"), "{error}");
    }
}
