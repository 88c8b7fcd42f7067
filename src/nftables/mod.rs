//! Enforcement at the host firewall: an nftables table of mailwarden's own whose sets hold
//! the active bans and blocked networks (dropped on the guarded ports) and the trusted
//! networks (accepted before the drop), kept in step by a worker thread that applies
//! `nft -f -` batches. Never on the request path: a change only wakes the worker through a
//! bounded queue (a full queue means a wake-up is already pending, which covers this change
//! too), and the worker reads what to enforce from `Warden::firewall_drops`.
//!
//! Not here: what counts as a drop (`warden::drops`), the set arithmetic (`sets`), the text
//! of the batches (`batch`).

pub mod batch;
pub mod sets;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use sets::{Sets, Step};

use crate::clock::Timestamp;
use crate::metrics::Metrics;
use crate::warden::Warden;

/// `[nftables]`: whether and how mailwarden programs the host's firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftablesSettings {
    pub enabled: bool,
    /// The `inet` table mailwarden owns: created at start, replaced whole by every resync.
    pub table: String,
    /// The sets' base name: `{set}_ipv4`, `{set}_ipv6`, `{set}_trusted_ipv4`, `{set}_trusted_ipv6`.
    pub set: String,
    /// The TCP ports a banned source is dropped on; empty: every packet from it.
    pub ports: Vec<u16>,
    /// How often the table is created afresh from the bans in force, repairing anything
    /// done to it by hand and renewing open-ended elements.
    pub resync_every: Duration,
}

/// Why the firewall could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft ({0}); install Debian's nftables package or set nftables.enabled = false")]
    Spawn(std::io::Error),
    #[error("nft refused the batch: {0}")]
    Refused(String),
}

/// Runs one batch with `nft -f -`.
fn apply(batch: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(batch.as_bytes()).map_err(NftError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first_lines: Vec<&str> = stderr.lines().take(3).collect();
    Err(NftError::Refused(crate::printable::escape(&first_lines.join(" / ")).into_owned()))
}

/// A wake-up is coalesced with the changes that follow within this long.
const COALESCE: Duration = Duration::from_millis(20);
/// The first retry after a failed batch; doubled up to `resync_every`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The worker that keeps the table in step.
pub struct Enforcer {
    wake: SyncSender<()>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Worker {
    warden: Warden,
    settings: NftablesSettings,
    metrics: Metrics,
    /// What the last successful batch left in the kernel.
    applied: Sets,
    /// When the table is next created afresh; `None`: at once (after a failure).
    next_resync: Option<Timestamp>,
    retry: Duration,
}

impl Enforcer {
    /// Creates the table with what `warden` enforces now, and starts the worker. Fails,
    /// without starting it, when `nft` cannot be run or refuses the table: a start with
    /// `nftables.enabled = true` must not pretend to enforce.
    pub fn start(warden: &Warden, settings: NftablesSettings) -> Result<Enforcer, NftError> {
        let metrics = warden.metrics().clone();
        let mut worker = Worker {
            warden: warden.clone(),
            settings,
            metrics,
            applied: Sets::default(),
            next_resync: None,
            retry: FIRST_RETRY,
        };
        // Watched before the table is made, so a ban placed meanwhile leaves a wake-up queued.
        let (wake, woken) = sync_channel(1);
        let notify = wake.clone();
        warden.watch_drops(Box::new(move || match notify.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }));
        worker.resync()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("nftables".into())
            .spawn(move || worker.run(&woken, &stop))
            .map_err(NftError::Spawn)?;
        Ok(Enforcer { wake, stopping, thread: Some(thread) })
    }

    /// Stops the worker. The table stays: its elements end by their own timeouts.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Worker {
    fn run(&mut self, woken: &Receiver<()>, stopping: &AtomicBool) {
        loop {
            let now = self.warden.now();
            let wanted = Sets::wanted(&self.warden.firewall_drops());
            let deadline = [self.next_resync, wanted.review_at].into_iter().flatten().min();
            let wait = match deadline {
                _ if self.next_resync.is_none() => self.retry,
                Some(at) => now.until(at),
                None => self.settings.resync_every,
            };
            match woken.recv_timeout(wait) {
                Ok(()) => {
                    std::thread::sleep(COALESCE);
                    while woken.try_recv().is_ok() {}
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if stopping.load(Ordering::Acquire) {
                return;
            }
            let outcome = match self.next_resync {
                Some(at) if self.warden.now() < at => self.follow(),
                _ => self.resync(),
            };
            match outcome {
                Ok(()) => self.retry = FIRST_RETRY,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?self.retry, "could not update the nftables sets; the table will be recreated");
                    self.next_resync = None;
                    self.retry = (self.retry * 2).min(self.settings.resync_every);
                }
            }
        }
    }

    fn count(&self, result: &Result<(), NftError>) {
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics.nftables_batches.with_label_values(&[label]).inc();
    }

    /// The table created afresh, in one batch.
    fn resync(&mut self) -> Result<(), NftError> {
        let now = self.warden.now();
        let wanted = Sets::wanted(&self.warden.firewall_drops());
        let result = apply(&batch::whole_table(&self.settings, &wanted, now));
        self.count(&result);
        result?;
        self.applied = wanted;
        self.next_resync = Some(now.plus(self.settings.resync_every));
        Ok(())
    }

    /// The sets brought from what was applied to what is wanted.
    fn follow(&mut self) -> Result<(), NftError> {
        let now = self.warden.now();
        let wanted = Sets::wanted(&self.warden.firewall_drops());
        let (text, after) = match sets::step(&self.applied, &wanted, now) {
            Step::Nothing => return Ok(()),
            Step::Add(added) => {
                (batch::additions(&self.settings, &added, now), sets::after_adding(&self.applied, &added, now))
            }
            Step::Refill => (batch::refill(&self.settings, &wanted, now), wanted),
        };
        let result = apply(&text);
        self.count(&result);
        result?;
        self.applied = after;
        Ok(())
    }
}
