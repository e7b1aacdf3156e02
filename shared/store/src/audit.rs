//! The tenant's audit log: every change made through the API, and every change the platform
//! makes on its own (hibernation, scheduled runs), with who, what, and before/after.

use crate::keys;
use spotwise_core::TenantId;
use spotwise_core::domain::AuditEvent;
use time::OffsetDateTime;

use crate::{Item, PutCondition, Store, StoreError};

pub const RETENTION: time::Duration = time::Duration::days(400);

/// What changed: `action` such as `webhook.update`, the resource, and its state around it.
pub struct Change<'a> {
    pub action: &'a str,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub async fn write(
    store: &Store,
    tenant: &TenantId,
    actor: &str,
    change: Change<'_>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let id = ulid::Ulid::new().to_string();
    let event = AuditEvent {
        id: id.clone(),
        tenant_id: tenant.clone(),
        actor: actor.to_owned(),
        action: change.action.to_owned(),
        target: change.target,
        before: change.before,
        after: change.after,
        at: now,
    };
    let item = Item::new(keys::audit(tenant, &id), event).expiring_at(now + RETENTION);
    store.put(&item, PutCondition::IfAbsent).await
}
