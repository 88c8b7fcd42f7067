//! What the host firewall enforces: the one place that decides which addresses the nftables
//! sets (and the plain-text ban list) hold, and the hook that tells the firewall's worker
//! when that may have changed.

use std::sync::Arc;

use super::Warden;
use crate::access::ListKind;
use crate::nftables::sets::{Drops, Element};

impl Warden {
    /// What the host firewall should drop and spare now: every active ban of a whole source
    /// (a source ban or a subnet ban; never an IP+login refusal, which refuses one login and
    /// not the address) and every blocked network in force (policy file and API), each until
    /// it ends; and the trusted networks, which are never dropped.
    pub fn firewall_drops(&self) -> Drops {
        let now = self.now();
        let access = self.shared.access.load();
        // Observe mode enforces nothing, at the firewall neither: a blocked entry in observe
        // mode is left out, and so are all bans while the whole server observes.
        let list = |kind| {
            access
                .entries(kind, now)
                .into_iter()
                .filter(|e| !e.observe)
                .map(|e| Element { network: e.network, ends: e.expires_at })
                .collect()
        };
        let mut banned: Vec<Element> = if self.shared.policy.load().server.observe {
            Vec::new()
        } else {
            self.shared
                .bans
                .list(now)
                .into_iter()
                .filter(|ban| ban.refused_login.is_none())
                .map(|ban| Element { network: ban.source.network(), ends: Some(ban.expires_at) })
                .collect()
        };
        banned.extend::<Vec<Element>>(list(ListKind::Blocked));
        Drops { banned, trusted: list(ListKind::Trusted) }
    }

    /// Calls `changed` (which must not block) whenever `firewall_drops` may have changed: a
    /// ban placed, lifted or swept, here or announced by another node, and every change of
    /// the admin lists. Set once, by the firewall's worker.
    pub fn watch_drops(&self, changed: Box<dyn Fn() + Send + Sync>) {
        let changed: Arc<dyn Fn() + Send + Sync> = Arc::from(changed);
        self.shared.bans.watch(changed.clone());
        let _ = self.shared.drops_watch.set(changed);
    }

    /// Tells the firewall's worker that the admin lists changed.
    pub(super) fn lists_changed(&self) {
        if let Some(changed) = self.shared.drops_watch.get() {
            changed();
        }
    }
}
