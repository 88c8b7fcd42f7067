//! The audit trail: every change made through the admin API, recorded with the acting
//! principal's name after the change succeeded, and read back for `GET /api/v1/audit`.

use super::Warden;
use crate::audit::{AuditAction, AuditFilter, AuditRecord};
use crate::principal::Principal;
use crate::store::StoreError;

impl Warden {
    /// Records that `actor` did `action` to `target`. Blocking. The change itself is made and
    /// stored already, so a store that cannot take the record is logged (with everything the
    /// record would have said) and counted, never turned into a failed change.
    pub fn record_change(&self, actor: &Principal, action: AuditAction, target: &str, detail: String) {
        let record = AuditRecord::new(self.shared.clock.now(), &actor.name, action, target, detail);
        let saved = self.shared.store.save_audit(&record);
        self.shared.metrics.store_result("save_audit", &saved);
        match saved {
            Ok(()) => tracing::info!(
                actor = actor.name,
                action = action.label(),
                target,
                detail = record.detail,
                "change recorded"
            ),
            Err(e) => tracing::error!(
                actor = actor.name,
                action = action.label(),
                target,
                detail = record.detail,
                error = %e,
                "the change was made but the audit trail could not record it"
            ),
        }
    }

    /// The name of whoever last changed the API's firewall rules of `key`, from the audit
    /// trail (which holds that fact once); `None` when the trail does not say. Blocking.
    pub fn rules_changed_by(&self, key: &str) -> Result<Option<String>, StoreError> {
        let filter = AuditFilter { target: Some(key.to_string()), limit: 20, ..AuditFilter::default() };
        let (records, _) = self.audit(&filter)?;
        Ok(records.into_iter().find(|record| record.action.is_firewall_change()).map(|record| record.actor))
    }

    /// The audit records matching `filter`, newest first, and how many match. Blocking.
    pub fn audit(&self, filter: &AuditFilter) -> Result<(Vec<AuditRecord>, usize), StoreError> {
        let found = self.shared.store.audit(filter);
        self.shared.metrics.store_result("read_audit", &found);
        found
    }
}
