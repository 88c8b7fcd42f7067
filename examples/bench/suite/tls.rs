//! What TLS costs the login mix (issue 20): the same mix against two mailwarden processes, one
//! with a plain policy listener and one with `[tls] policy_cert` (an ECDSA P-256 certificate
//! from a CA made here with rcgen), loaded alternately round by round as in `run_mix`. Every
//! connection makes one handshake when it opens and then keeps the session, as Dovecot's HTTP
//! client does, so the figure is mostly the record layer's cost per request plus the
//! handshakes of `connections` connections. There is no target: the ratio is information.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

use super::load::{self, LoadSpec, Pace, Target, Workload};
use super::process::Server;
use super::report::TlsFigures;
use super::world::{self, World};
use super::{Measured, Settings, ban_sources, chunks, measured, say, start_mailwarden};

pub fn run(settings: &Settings, pinned: bool, dir: &Path) -> io::Result<TlsFigures> {
    let (generator_cpu, server_cpu) = if pinned { (Some(0), Some(1)) } else { (None, None) };
    fs::create_dir_all(dir)?;
    let world = Arc::new(World::new(settings.mix.clone()));
    let country_db = world.write_geoip(dir);
    let sections = world.policy_sections(&country_db);
    let rounds = settings.rounds.max(1);
    let plans = chunks(world.plan(settings.tls_logins, 1), rounds);
    say(format!("tls: {} logins in {rounds} rounds against a plain and a TLS policy listener", settings.tls_logins));

    let (client_config, tls_section) = certificates(dir)?;
    let plain = start_mailwarden(settings, &dir.join("plain"), &sections, server_cpu)?;
    // Banned over plain HTTP first (the bench's own client speaks plain HTTP), then started
    // again on the same state with TLS: the bans are in its database.
    let tls_dir = dir.join("tls");
    let mut figures =
        TlsFigures { logins: settings.tls_logins, rounds, connections: settings.connections, ..Default::default() };
    figures.bans_plain = ban_sources(&plain, settings.mix.banned)?;
    {
        let unencrypted = start_mailwarden(settings, &tls_dir, &sections, server_cpu)?;
        ban_sources(&unencrypted, settings.mix.banned)?;
    }
    let tls = start_mailwarden(settings, &tls_dir, &(tls_section + &sections), server_cpu)?;
    figures.bans_tls = tls.health("active_bans").unwrap_or(0);

    let spec = |server: &Server, plan: &Arc<[world::Login]>, tls: Option<Arc<rustls::ClientConfig>>| LoadSpec {
        target: Target { tls, ..Target::plain(server.policy_addr, &server.api_key) },
        workload: Workload::Mix { world: world.clone(), plan: plan.clone() },
        connections: settings.connections,
        threads: if pinned { 1 } else { 2 },
        pace: Pace::Closed,
        pin_cpu: generator_cpu,
    };
    let (mut plain_total, mut tls_total): (Option<Measured>, Option<Measured>) = (None, None);
    let started = Instant::now();
    for (round, plan) in plans.iter().enumerate() {
        let run = measured(&plain, || load::run(&spec(&plain, plan, None)))?;
        let plain_rate = run.result.requests_per_second();
        Measured::add(&mut plain_total, run);
        let run = measured(&tls, || load::run(&spec(&tls, plan, Some(client_config.clone()))))?;
        let tls_rate = run.result.requests_per_second();
        Measured::add(&mut tls_total, run);
        figures.round_ratios.push(tls_rate / plain_rate.max(1e-9));
        say(format!(
            "tls round {}/{rounds}: plain {plain_rate:.0} req/s, TLS {tls_rate:.0} req/s ({:.1}%)",
            round + 1,
            100.0 * tls_rate / plain_rate.max(1e-9)
        ));
    }
    figures.plain = plain_total.map(Measured::figures).unwrap_or_default();
    figures.tls = tls_total.map(Measured::figures).unwrap_or_default();
    figures.rss_plain_kib = plain.rss_kib();
    figures.rss_tls_kib = tls.rss_kib();
    say(format!("tls part took {:.0} s", started.elapsed().as_secs_f64()));
    Ok(figures)
}

/// A CA and the policy listener's certificate for 127.0.0.1, written into `dir`: the load
/// generator's client configuration and the `[tls]` section naming the files.
fn certificates(dir: &Path) -> io::Result<(Arc<rustls::ClientConfig>, String)> {
    let failed = |e: rcgen::Error| io::Error::other(format!("cannot make the test certificates: {e}"));
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "mailwarden bench CA");
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(failed)?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .map_err(failed)?
        .signed_by(&key, &issuer)
        .map_err(failed)?;
    let (cert_path, key_path) = (dir.join("policy.pem"), dir.join("policy.key"));
    fs::write(&cert_path, server.pem())?;
    fs::write(&key_path, key.serialize_pem())?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).map_err(|e| io::Error::other(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let section = format!(
        "[tls]\npolicy_cert = {:?}\npolicy_key = {:?}\n\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    Ok((Arc::new(config), section))
}
