//! The tenant's audit log: every change made through the API, and every change the platform
//! makes on its own (hibernation, scheduled runs), with who, what, and before/after.

use crate::keys;
use spotwise_core::TenantId;
use spotwise_core::domain::AuditEvent;
use time::OffsetDateTime;

use crate::{Item, PutCondition, Store, StoreError, Write};

pub const RETENTION: time::Duration = time::Duration::days(400);

/// What changed: `action` such as `webhook.update`, the resource, and its state around it.
pub struct Change<'a> {
    pub action: &'a str,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// The audit event of `change`, to be written with the change itself ([`crate::Store::transact`]).
pub fn event(
    tenant: &TenantId,
    actor: &str,
    change: Change<'_>,
    now: OffsetDateTime,
) -> Item<AuditEvent> {
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
    Item::new(keys::audit(tenant, &id), event).expiring_at(now + RETENTION)
}

/// The audit event of `change` as the last write of a transaction.
pub fn write_of(
    tenant: &TenantId,
    actor: &str,
    change: Change<'_>,
    now: OffsetDateTime,
) -> Result<Write, StoreError> {
    Write::put(&event(tenant, actor, change, now), PutCondition::IfAbsent)
}

/// Records a change the platform has already made on its own (hibernation, scheduled runs).
pub async fn write(
    store: &Store,
    tenant: &TenantId,
    actor: &str,
    change: Change<'_>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    store
        .put(&event(tenant, actor, change, now), PutCondition::IfAbsent)
        .await
}
