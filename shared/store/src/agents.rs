//! Agent heartbeats and liveness. A heartbeat is one UpdateItem on the agent's status that
//! returns the status before it: no read, and the previous state says whether the agent came
//! back. The liveness index that finds silent agents is a separate item per agent, in one of
//! [`keys::AGENT_LIVENESS_SHARDS`] index partitions, rewritten only when the agent's heartbeat
//! window ([`WINDOW`]) moves: once per five minutes instead of every 30 seconds.

use serde::{Deserialize, Serialize};
use spotwise_core::domain::{AgentMonitored, AgentSilence, AgentStatus};
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

use crate::keys;
use crate::runs::sortable;
use crate::table::{Item, PutCondition, Query, Store, StoreError};

/// The liveness index knows each agent's last heartbeat to this precision.
pub const WINDOW: time::Duration = time::Duration::minutes(5);

/// The status item: what the API shows, plus the window the liveness entry was last written for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredStatus {
    #[serde(flatten)]
    status: AgentStatus,
    #[serde(default)]
    liveness_window: Option<String>,
}

/// An agent's entry in the liveness index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    /// Start of the window the agent last beat in (`runs::sortable`).
    pub window: String,
}

fn window_of(at: OffsetDateTime) -> String {
    let seconds = WINDOW.whole_seconds();
    let start = at.unix_timestamp() - at.unix_timestamp().rem_euclid(seconds);
    sortable(OffsetDateTime::from_unix_timestamp(start).unwrap_or(at))
}

/// Records a heartbeat and returns the status as it was before (`None`: the first beat).
/// Writes the liveness entry too when the window moved or the agent was declared offline.
pub async fn beat(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    agent_version: String,
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<Option<AgentStatus>, StoreError> {
    let window = window_of(now);
    let fields = StoredStatus {
        status: AgentStatus {
            tenant_id: tenant.clone(),
            cluster_id: cluster.clone(),
            agent_version,
            dry_run,
            last_heartbeat_at: now,
            offline_since: None,
        },
        liveness_window: Some(window.clone()),
    };
    let previous: Option<Item<StoredStatus>> = store
        .merge(&keys::agent_status(tenant, cluster), &fields)
        .await?;
    let indexed = previous.as_ref().is_some_and(|p| {
        p.body.status.offline_since.is_none()
            && p.body.liveness_window.as_deref() == Some(window.as_str())
    });
    if !indexed {
        let entry = Item::new(
            keys::agent_liveness(tenant, cluster),
            Liveness {
                tenant_id: tenant.clone(),
                cluster_id: cluster.clone(),
                window: window.clone(),
            },
        )
        .with_gsi1(keys::agent_liveness_index(&window, tenant, cluster));
        store.put(&entry, PutCondition::Always).await?;
    }
    Ok(previous.map(|p| p.body.status))
}

/// Agents whose last heartbeat is certainly older than `silence`: their whole window ended
/// before `now - silence`. An agent is found between `silence` and `silence + WINDOW` after its
/// last beat.
pub async fn silent(
    store: &Store,
    now: OffsetDateTime,
    silence: time::Duration,
) -> Result<Vec<Liveness>, StoreError> {
    let last_window = window_of(now - silence - WINDOW);
    let mut found = Vec::new();
    for shard in 0..keys::AGENT_LIVENESS_SHARDS {
        let entries = store
            .query_all::<Liveness>(
                &Query::gsi1(keys::agent_liveness_partition(shard))
                    .up_to(format!("{last_window}#~")),
            )
            .await?;
        found.extend(entries.into_iter().map(|e| e.body));
    }
    Ok(found)
}

/// Declares a silent agent offline, unless it beat since it was found: its status gets
/// `offline_since` and its liveness entry goes, so it is declared once. `None` when the agent
/// beat in between (or was unlinked): nothing changes.
pub async fn declare_offline(
    store: &Store,
    entry: &Liveness,
    now: OffsetDateTime,
) -> Result<Option<AgentStatus>, StoreError> {
    let status_key = keys::agent_status(&entry.tenant_id, &entry.cluster_id);
    let liveness_key = keys::agent_liveness(&entry.tenant_id, &entry.cluster_id);
    let Some(mut item) = store.get::<StoredStatus>(&status_key).await? else {
        store
            .delete_if(&liveness_key, "window", &entry.window)
            .await?;
        return Ok(None);
    };
    if item.body.status.offline_since.is_some()
        || item.body.liveness_window.as_deref() != Some(entry.window.as_str())
    {
        return Ok(None);
    }
    item.body.status.offline_since = Some(now);
    match store.update_versioned(&item).await {
        Ok(_) => {}
        // A heartbeat won: it bumped the version.
        Err(StoreError::StaleVersion { .. }) => return Ok(None),
        Err(err) => return Err(err),
    }
    // Only the entry found: a heartbeat that came back since has rewritten it for a new window.
    store
        .delete_if(&liveness_key, "window", &entry.window)
        .await?;
    Ok(Some(item.body.status))
}

/// How long silences are kept: the status page shows 90 days.
const SILENCE_RETENTION: time::Duration = time::Duration::days(100);

/// Records that the agent was silent from `from` (its last heartbeat) to `to` (the next).
pub async fn record_silence(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<(), StoreError> {
    let silence = AgentSilence {
        cluster_id: cluster.clone(),
        from,
        to,
    };
    let item = Item::new(
        keys::agent_silence(tenant, cluster, &spotwise_core::rfc3339(from)),
        silence,
    )
    .expiring_at(to + SILENCE_RETENTION);
    store.put(&item, PutCondition::Always).await
}

/// Records the agent's first report, once.
pub async fn record_first_report(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let item = Item::new(
        keys::agent_monitored(tenant, cluster),
        AgentMonitored {
            cluster_id: cluster.clone(),
            since: at,
        },
    );
    match store.put(&item, PutCondition::IfAbsent).await {
        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The agent's first report and its silences that ended after `since`.
pub async fn history(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    since: OffsetDateTime,
) -> Result<(Option<OffsetDateTime>, Vec<AgentSilence>), StoreError> {
    let query = Query::partition(keys::tenant_partition(tenant))
        .prefix(keys::agent_silences_prefix(cluster));
    let monitored = keys::agent_monitored(tenant, cluster);
    let (first, silences) = tokio::try_join!(
        store.get::<AgentMonitored>(&monitored),
        store.query_all::<AgentSilence>(&query),
    )?;
    Ok((
        first.map(|f| f.body.since),
        silences
            .into_iter()
            .map(|item| item.body)
            .filter(|s| s.to > since)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_window_starts_on_a_five_minute_boundary() {
        assert_eq!(
            window_of(datetime!(2026-12-03 07:24:59 UTC)),
            "2026-12-03T07:20:00Z"
        );
        assert_eq!(
            window_of(datetime!(2026-12-03 07:25:00 UTC)),
            "2026-12-03T07:25:00Z"
        );
    }

    #[test]
    fn agents_spread_over_every_shard() {
        let tenant = TenantId::new("t1").unwrap();
        let shards: std::collections::BTreeSet<String> = (0..200)
            .map(|i| {
                let cluster = ClusterId::new(format!("111122223333.us-east-1.c{i}")).unwrap();
                keys::agent_liveness_index("w", &tenant, &cluster).gsi1pk
            })
            .collect();
        assert_eq!(shards.len(), usize::from(keys::AGENT_LIVENESS_SHARDS));
    }
}
