//! Certificates for tests, made in code (rcgen): a private CA, server certificates for
//! loopback addresses signed by it, and client certificates; written as PEM files into a
//! temporary folder. Also a TLS client that returns the certificate a server presented, and
//! ureq agents that trust the CA (and present a client certificate).

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate and its key as PEM files.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PemPair {
    /// The certificate's DER, as a server presents it.
    pub fn der(&self) -> Vec<u8> {
        let pem = fs::read(&self.cert).expect("read certificate");
        CertificateDer::from_pem_slice(&pem).expect("a PEM certificate").to_vec()
    }
}

/// A private certificate authority with its files in a temporary folder.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what clients trust.
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::Builder::new().prefix("mailwarden-tls-").tempdir().expect("temp dir");
        // Readable by Dovecot's and Redis's own users.
        fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let path = dir.path().join("ca.pem");
        write(&path, &cert.pem());
        TestCa { dir, cert: path, issuer: Issuer::new(params, key) }
    }

    /// A server certificate for `names` (IP addresses become IP SANs), with `serial`,
    /// written as `<file>.pem` and `<file>.key`.
    pub fn server(&self, file: &str, names: &[&str], serial: u64) -> PemPair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    /// A certificate for `names` good for both ends of a connection (server and client
    /// authentication), as the nodes of a Redis Cluster with `tls-cluster` need.
    pub fn peer(&self, file: &str, names: &[&str], serial: u64) -> PemPair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("peer"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    /// A client certificate named `common_name`.
    pub fn client(&self, file: &str, common_name: &str) -> PemPair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    fn sign(&self, file: &str, params: CertificateParams) -> PemPair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let pair = PemPair {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        write(&pair.cert, &cert.pem());
        write(&pair.key, &key.serialize_pem());
        pair
    }
}

fn write(path: &Path, text: &str) {
    let mut file = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("write PEM");
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let pem = fs::read(ca).expect("read CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    roots
}

/// Connects to `address` over TLS trusting `ca`, and returns the certificate the server
/// presented (DER), or the handshake's error.
pub fn served_certificate(address: SocketAddr, ca: &Path) -> Result<Vec<u8>, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    let name = ServerName::IpAddress(address.ip().into());
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut socket = TcpStream::connect_timeout(&address, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(|e| e.to_string())?;
    }
    let certs = connection.peer_certificates().ok_or("no certificate presented")?;
    Ok(certs[0].to_vec())
}

/// A ureq agent that trusts `ca` and, when given, presents `client`.
pub fn agent(ca: &Path, client: Option<&PemPair>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = fs::read(ca).expect("read CA");
    let ca = Certificate::from_pem(&pem).expect("CA certificate").to_owned();
    let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(RootCerts::new_with_certs(&[ca]));
    if let Some(pair) = client {
        let cert = Certificate::from_pem(&fs::read(&pair.cert).expect("read")).expect("certificate").to_owned();
        let key = PrivateKey::from_pem(&fs::read(&pair.key).expect("read")).expect("key").to_owned();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(tls.build())
        .build()
        .into()
}
