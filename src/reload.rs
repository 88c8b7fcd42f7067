//! Reloading the policy from its file, whatever asked for it (SIGHUP, the admin API, a change
//! of the file on disk): load and validate the whole file, then hand it to `Warden` in one
//! swap. A file that fails validation changes nothing; the policy in force keeps serving, and
//! the error is logged, counted and returned to whoever asked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{ConfigError, Policy};
use crate::geoip::{GeoIp, GeoIpError};
use crate::secrets::{self, Missing, SecretError};
use crate::tls::{ListenersTls, TlsError};
use crate::warden::Warden;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretError),
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error("{0}; the certificates in force stay served")]
    Tls(#[from] TlsError),
    #[error("firewall rules need GeoIP data that is not configured:\n  - {}", .0.join("\n  - "))]
    Rules(Vec<String>),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings that changed in the file but need a restart; their old values stay in force.
    pub restart_required: Vec<&'static str>,
}

pub struct Reloader {
    path: PathBuf,
    warden: Warden,
    /// What the TLS listeners serve: a reload re-reads their files (a renewed certificate).
    tls: Arc<ListenersTls>,
    /// One reload at a time, so two triggers at once apply in order.
    running: Mutex<()>,
}

impl Reloader {
    pub fn new(path: &Path, warden: Warden, tls: Arc<ListenersTls>) -> Reloader {
        Reloader { path: path.to_path_buf(), warden, tls, running: Mutex::new(()) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file and puts it in force. Blocking (reads the file). `trigger` names what
    /// asked, for the log.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let result = self.load().and_then(|policy| {
            let geoip = if policy.geoip == self.warden.policy().geoip {
                None
            } else {
                Some(GeoIp::open(&policy.geoip, self.warden.metrics().geoip.clone())?)
            };
            // Read before anything changes, so a broken certificate refuses the whole reload.
            let tls = self.tls.prepare(&policy.tls)?;
            let mut restart_required = self.warden.apply_policy(policy, geoip).map_err(ReloadError::Rules)?;
            restart_required.extend(tls.restart_required.iter().copied());
            self.tls.apply(tls);
            Ok(Reloaded { restart_required })
        });
        let metrics = self.warden.metrics();
        match &result {
            Ok(reloaded) => {
                metrics.config_reloads.with_label_values(&["success"]).inc();
                tracing::info!(trigger, path = %self.path.display(), "policy reloaded");
                if !reloaded.restart_required.is_empty() {
                    tracing::warn!(
                        settings = ?reloaded.restart_required,
                        "these settings changed but need a restart; their old values stay in force"
                    );
                }
            }
            Err(e) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(trigger, error = %e, "policy reload refused; the previous policy stays in force");
            }
        }
        result
    }

    fn load(&self) -> Result<Policy, ReloadError> {
        let mut policy = Policy::load(&self.path)?;
        secrets::resolve(&mut policy.auth, &policy.server.state_dir.clone(), Missing::Generate)?;
        Ok(policy)
    }
}
