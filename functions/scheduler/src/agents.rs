//! Agents that stopped reporting. Each tick reads the liveness index for agents whose last
//! heartbeat window ended before the silence allowed, declares those agents offline and tells
//! their tenants once. The agent's next heartbeat puts it back.

use std::collections::BTreeMap;

use spotwise_core::domain::{AgentStatus, Notification, Severity};
use spotwise_store::StoreError;
use spotwise_store::agents;
use spotwise_store::runs::sortable;
use time::OffsetDateTime;
use tracing::info;

use crate::Deps;

/// Ten missed heartbeats (every 30 s): long enough to ride out an agent restart or a rollout.
/// The liveness index adds up to its five-minute window before the agent is found.
pub const OFFLINE_AFTER: time::Duration = time::Duration::minutes(5);

/// Declares silent agents offline; returns the clusters newly declared.
pub async fn flag_silent(
    deps: &Deps,
    now: OffsetDateTime,
) -> Result<Vec<spotwise_core::ClusterId>, StoreError> {
    let mut flagged = Vec::new();
    for entry in agents::silent(&deps.store, now, OFFLINE_AFTER).await? {
        let Some(status) = agents::declare_offline(&deps.store, &entry, now).await? else {
            continue;
        };
        info!(cluster = %status.cluster_id, last_heartbeat = %status.last_heartbeat_at, "agent offline");
        deps.notifications
            .notify(&offline_notification(&status, now))
            .await;
        flagged.push(status.cluster_id);
    }
    Ok(flagged)
}

fn offline_notification(status: &AgentStatus, now: OffsetDateTime) -> Notification {
    let silent_minutes = (now - status.last_heartbeat_at).whole_minutes();
    Notification {
        tenant_id: status.tenant_id.clone(),
        event_type: "agent_offline".into(),
        severity: Severity::Critical,
        cluster_id: Some(status.cluster_id.clone()),
        labels: BTreeMap::from([("agent_version".to_owned(), status.agent_version.clone())]),
        title: format!("Spotwise agent of {} is offline", status.cluster_id),
        body: format!(
            "No heartbeat for {silent_minutes} minutes (last at {}). Until it reports again, \
             interruption drains and scheduled actions for this cluster are not executed.",
            sortable(status.last_heartbeat_at)
        ),
        links: Vec::new(),
        occurred_at: now,
        dedup_key: format!(
            "agent-offline-{}-{}",
            status.cluster_id,
            sortable(status.last_heartbeat_at)
        ),
    }
}
