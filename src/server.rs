//! Start-up and shutdown of the running server: open the store, build the `Warden`, bind the
//! policy and admin listeners, run the background tasks (the expiry sweeper, reload on SIGHUP,
//! and reload when the policy file changes if configured), and stop gracefully on SIGTERM or
//! SIGINT (in-flight requests finish; every acknowledged change is already on disk).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::{App, HttpServer, web};

use crate::clock::SystemClock;
use crate::cluster::Cluster;
use crate::config::{Policy, StoreBackend};
use crate::geoip::{GeoIp, GeoIpError};
use crate::http;
use crate::metrics::Metrics;
use crate::nftables::Enforcer;
use crate::reload::Reloader;
use crate::store::{RedisStore, SqliteStore, Store, StoreError};
use crate::tls::{Listener, ListenersTls, TlsError};
use crate::warden::{OpenError, Warden};

/// How often ended bans are swept from memory and the store. Expired bans are already
/// ignored by `allow` before then; this only tidies and counts them.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Worker threads of the policy listener: one per core, as Dovecot's requests are many and
/// short.
const POLICY_WORKERS: usize = 2;

/// Raises the soft limit on open files to the hard limit, so thousands of idle connections
/// (Dovecot keeps up to 100 per auth process, attackers more) do not starve the listeners.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

/// Fixes glibc's mmap threshold at its default (128 KiB). Left dynamic, glibc raises it to the
/// size of each large block freed, and the trackers' maps free one each time a shard's table
/// doubles as it grows: from then on their tables and entry arrays (hundreds of KiB each)
/// came from the heap, whose holes are never returned, and the 10,000,000-source flood's
/// plateau stood 3 MiB higher (docs/BENCHMARKS.md). Fixed, every such block is mapped on its
/// own and given back whole when it is freed.
fn keep_large_blocks_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the workers start.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) != 1 {
            tracing::warn!("could not fix the allocator's mmap threshold");
        }
    }
}

/// How often the policy file is checked for changes when `server.reload_on_change` is set.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Longer than Dovecot's 10 s idle time for policy connections, so it is always Dovecot that
/// closes an idle connection and never us just as it sends a request on it (which Dovecot
/// would count as a policy failure).
const KEEP_ALIVE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: cannot listen on {address}: {source}")]
    Bind { key: &'static str, address: SocketAddr, source: io::Error },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("nftables.enabled = true, but the host firewall cannot be programmed: {0}")]
    Nftables(#[from] crate::nftables::NftError),
    #[error("server stopped with an error: {0}")]
    Runtime(io::Error),
}

/// Runs the server until it is told to stop. `config_path` is where reloads read the policy.
pub fn run(policy: Policy, config_path: &Path) -> Result<(), ServeError> {
    http::log_panics();
    crate::tls::install_default_provider();
    actix_web::rt::System::new().block_on(serve(policy, config_path))
}

/// Binds `$server` to `$address`, with TLS when `$tls` (an `Option<ServerConfig>`) is some;
/// an error names the listener's key.
macro_rules! bind {
    ($server:expr, $key:expr, $address:expr, $tls:expr) => {
        match $tls {
            Some(config) => $server.bind_rustls_0_23($address, config),
            None => $server.bind($address),
        }
        .map_err(|source| ServeError::Bind { key: $key, address: $address, source })?
    };
}

async fn serve(policy: Policy, config_path: &Path) -> Result<(), ServeError> {
    // Before anything else, so a certificate that cannot be read stops the start at once.
    let tls = Arc::new(ListenersTls::load(&policy.tls)?);
    let (store, redis): (Arc<dyn Store>, Option<Arc<RedisStore>>) = match &policy.store.backend {
        StoreBackend::Embedded => (Arc::new(SqliteStore::open(&policy.server.state_dir)?), None),
        StoreBackend::Redis(settings) => {
            let redis = Arc::new(RedisStore::open(settings)?);
            if !redis.is_up() {
                tracing::warn!(
                    "Redis is unreachable at start: answering from the policy file alone until it answers, then loading the shared state"
                );
            }
            (redis.clone(), Some(redis))
        }
    };
    let refresh_every = policy.store.refresh_every;
    let (policy_address, admin_address) = (policy.server.policy_listen, policy.server.admin_listen);
    let watch_file = policy.server.reload_on_change;
    let client_timeout = policy.server.client_timeout;
    let max_connections = policy.server.max_connections;
    let per_worker = |workers: usize| (max_connections / workers).max(1);
    raise_open_file_limit();
    keep_large_blocks_mapped();
    let public_address = policy.server.public_listen;
    let metrics = Metrics::new()?;
    let geoip = GeoIp::open(&policy.geoip, metrics.geoip.clone())?;
    let geoip_every = policy.geoip_check_every;
    let nftables = policy.nftables.clone();
    let warden = Warden::open(policy, store, Arc::new(SystemClock), metrics, geoip)?;
    tracing::info!(bans = warden.bans().len(), store = warden.store_backend(), "state loaded");
    let enforcer = if nftables.enabled {
        let warden = warden.clone();
        let enforcer = web::block(move || Enforcer::start(&warden, nftables))
            .await
            .map_err(|e| ServeError::Runtime(io::Error::other(e.to_string())))??;
        tracing::info!("host firewall programmed (nftables)");
        Some(enforcer)
    } else {
        None
    };
    let cluster = redis.map(|redis| Arc::new(Cluster::start(&warden, redis, refresh_every)));
    let data = web::Data::new(warden.clone());
    let reloader = web::Data::new(Reloader::new(config_path, warden.clone(), tls.clone()));

    let policy_server = policy_listener(
        warden.clone(),
        policy_address,
        tls.server_config(Listener::Policy),
        client_timeout,
        per_worker(POLICY_WORKERS),
    )?;
    let admin_data = data.clone();
    let admin_reloader = reloader.clone();
    let admin_server = HttpServer::new(move || {
        App::new()
            .wrap_fn(http::catch_panics)
            .app_data(admin_data.clone())
            .app_data(admin_reloader.clone())
            .configure(http::console::configure)
            .configure(http::admin::configure)
    })
    .workers(1)
    .max_connections(per_worker(1))
    .client_request_timeout(client_timeout)
    .shutdown_timeout(10);
    let admin_server =
        bind!(admin_server, "server.admin_listen", admin_address, tls.server_config(Listener::Admin)).run();
    let public_server = match public_address {
        Some(address) => {
            let public_data = data.clone();
            let server = HttpServer::new(move || {
                App::new().wrap_fn(http::catch_panics).app_data(public_data.clone()).configure(http::public::configure)
            })
            .workers(1)
            .max_connections(per_worker(1))
            .client_request_timeout(client_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .shutdown_timeout(10);
            let server = bind!(server, "server.public_listen", address, tls.server_config(Listener::Public)).run();
            tracing::info!(public = %address, "self-service unblock page listening");
            Some(server)
        }
        None => None,
    };
    tracing::info!(
        policy = %policy_address,
        admin = %admin_address,
        tls = ?Listener::ALL.iter().filter(|l| tls.speaks_tls(**l)).map(|l| l.cert_key()).collect::<Vec<_>>(),
        version = env!("CARGO_PKG_VERSION"), "mailwarden listening");

    let mut tasks = vec![
        actix_web::rt::spawn(sweep_forever(warden.clone())),
        actix_web::rt::spawn(reload_on_sighup(reloader.clone().into_inner())),
        actix_web::rt::spawn(refresh_geoip_forever(warden.clone(), geoip_every)),
    ];
    if watch_file {
        tasks.push(actix_web::rt::spawn(reload_on_change(reloader.into_inner())));
    }
    let public_run = async {
        match public_server {
            Some(server) => server.await,
            None => Ok(()),
        }
    };
    let (policy_result, admin_result, public_result) =
        futures_util::future::join3(policy_server, admin_server, public_run).await;
    for task in tasks {
        task.abort();
    }
    if let Some(cluster) = cluster {
        let _ = web::block(move || cluster.stop()).await;
    }
    if let Some(enforcer) = enforcer {
        let _ = web::block(move || enforcer.stop()).await;
    }
    let closing = warden.clone();
    match web::block(move || closing.close()).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "could not compact the state database on exit"),
        Ok(Ok(())) | Err(_) => {}
    }
    tracing::info!("mailwarden stopped");
    policy_result.and(admin_result).and(public_result).map_err(ServeError::Runtime)
}

/// The policy listener: actix-http's `HttpService` around `http::policy::serve`, without
/// actix-web's `App` (src/http/policy.rs says why), set up as `HttpServer` sets up the other
/// listeners: the same keep-alive, timeouts, connection limit and graceful shutdown.
fn policy_listener(
    warden: Warden,
    address: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    client_timeout: Duration,
    max_connections: usize,
) -> Result<actix_server::Server, ServeError> {
    let builder = actix_server::Server::build()
        .workers(POLICY_WORKERS)
        .max_concurrent_connections(max_connections)
        .shutdown_timeout(10);
    let shutting_down = builder.graceful_shutdown_signal();
    // Built afresh for each worker, for plain TCP or for TLS (two stream types).
    macro_rules! service {
        () => {{
            let warden = warden.clone();
            let shutting_down = shutting_down.clone();
            actix_http::HttpService::build()
                // What `HttpServer` gives every service: idle keep-alive connections are closed
                // as soon as a graceful shutdown starts, instead of holding it for its timeout.
                .graceful_shutdown_signal(move || {
                    let signal = shutting_down.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(KEEP_ALIVE)
                .client_request_timeout(client_timeout)
                .client_disconnect_timeout(Duration::from_secs(1))
                .finish(move |request| http::policy::serve(request, warden.clone()))
        }};
    }
    let bound = match tls {
        Some(config) => builder.bind("policy", address, move || service!().rustls_0_23(config.clone())),
        None => builder.bind("policy", address, move || service!().tcp()),
    };
    let builder = bound.map_err(|source| ServeError::Bind { key: "server.policy_listen", address, source })?;
    Ok(builder.run())
}

async fn sweep_forever(warden: Warden) {
    let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let handle = warden.clone();
        match http::run_blocking(move || handle.sweep_expired()).await {
            Ok(Ok(_)) => {}
            // An unreachable store (cluster mode) is logged once by the store itself.
            Ok(Err(e)) if e.is_unavailable() => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not remove expired bans from the store")
            }
            // Logged by the panic hook; the next sweep tries again rather than none ever.
            Err(http::BlockingFailure::Panicked) => {}
            Err(http::BlockingFailure::ShuttingDown) => return,
        }
    }
}

async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload through the admin API instead");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let handle = reloader.clone();
        // The outcome is logged and counted by the reloader.
        let _ = web::block(move || handle.reload("SIGHUP")).await;
    }
}

/// What identifies a version of the file: editors that replace the file change the inode,
/// in-place writes change the time or the size.
fn file_version(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

async fn reload_on_change(reloader: Arc<Reloader>) {
    let mut seen = file_version(reloader.path());
    let mut tick = actix_web::rt::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        let now = file_version(reloader.path());
        if now.is_some() && now != seen {
            seen = now;
            let handle = reloader.clone();
            let _ = web::block(move || handle.reload("file change")).await;
        }
    }
}

/// Re-opens GeoIP databases that geoipupdate (or an admin) replaced on disk.
async fn refresh_geoip_forever(warden: Warden, every: Duration) {
    let mut tick = actix_web::rt::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let handle = warden.clone();
        if http::run_blocking(move || handle.refresh_geoip()).await == Err(http::BlockingFailure::ShuttingDown) {
            return;
        }
    }
}
