//! Right-sizing as stored: each cluster's usage history (gzip JSON beside its snapshots), its
//! per-workload state (one item), and its changes (one item each, listed in the scheduler's
//! index while they are applied or watched).

use spotwise_aws::{Bucket, ObjectError};
use spotwise_core::snapshot_codec::{self, MAX_JSON_BYTES};
use spotwise_core::{ClusterId, TenantId};
use spotwise_optimizer::resize::{ResizeChange, ResizeState};
use spotwise_optimizer::usage::UsageHistory;
use time::OffsetDateTime;
use tracing::warn;

use crate::keys;
use crate::table::{Item, PutCondition, Query, Store, StoreError, Write};

/// The source recorded on changes `auto` mode asks for.
pub const AUTO_ACTOR: &str = "optimizer:auto";
/// A usage history of the most containers tracked is a few MiB compressed.
const MAX_HISTORY_BYTES: u64 = 64 * 1024 * 1024;

/// The cluster's usage history; a missing one is empty, and so is one that cannot be read
/// (logged: a history starts over rather than blocking every plan).
pub async fn history(
    bucket: &Bucket,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<UsageHistory, StoreError> {
    let key = keys::usage_history_object(tenant, cluster);
    match bucket.get(&key, MAX_HISTORY_BYTES).await {
        Ok(None) => Ok(UsageHistory::default()),
        Ok(Some(bytes)) => Ok(
            snapshot_codec::gunzip_json(&bytes, MAX_JSON_BYTES).unwrap_or_else(|err| {
                warn!(%tenant, %cluster, error = %err, "usage history unreadable; starting over");
                UsageHistory::default()
            }),
        ),
        Err(ObjectError::Aws(failure)) => Err(failure.into()),
        Err(err @ ObjectError::TooLarge { .. }) => {
            warn!(%tenant, %cluster, error = %err, "usage history too large; starting over");
            Ok(UsageHistory::default())
        }
    }
}

pub async fn save_history(
    bucket: &Bucket,
    tenant: &TenantId,
    cluster: &ClusterId,
    history: &UsageHistory,
) -> Result<(), StoreError> {
    let body = snapshot_codec::gzip_json(history).map_err(|err| StoreError::Encode {
        pk: keys::usage_history_object(tenant, cluster),
        sk: String::new(),
        reason: err.to_string(),
    })?;
    bucket
        .put_gzip_json(&keys::usage_history_object(tenant, cluster), body)
        .await?;
    Ok(())
}

/// The cluster's per-workload state and its stored version (`None`: nothing stored yet).
pub async fn state(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<(ResizeState, Option<u64>), StoreError> {
    Ok(store
        .get::<ResizeState>(&keys::resize_state(tenant, cluster))
        .await?
        .map_or_else(
            || (ResizeState::default(), None),
            |i| (i.body, Some(i.version)),
        ))
}

fn state_write(
    tenant: &TenantId,
    cluster: &ClusterId,
    state: &ResizeState,
    version: Option<u64>,
) -> Result<Write, StoreError> {
    let mut item = Item::new(keys::resize_state(tenant, cluster), state);
    match version {
        None => Write::put(&item, PutCondition::IfAbsent),
        Some(version) => {
            item.version = version;
            Write::versioned(&item)
        }
    }
}

/// The stored item of `change`, indexed for the scheduler until it ends.
pub fn change_item(change: ResizeChange, version: u64) -> Item<ResizeChange> {
    let key = keys::resize_change(&change.tenant_id, &change.cluster_id, &change.id);
    let index = (!change.status.is_final())
        .then(|| keys::active_resizes_index(&change.tenant_id, &change.cluster_id, &change.id));
    let mut item = Item::new(key, change);
    item.version = version;
    match index {
        Some(index) => item.with_gsi1(index),
        None => item,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("change {active} of {workload} is still in progress")]
    Busy { workload: String, active: String },
}

/// Records a new change as its workload's active one, with `audit` in the same transaction; a
/// workload with a change in progress is refused.
pub async fn request(
    store: &Store,
    change: &ResizeChange,
    audit: Write,
) -> Result<(), RequestError> {
    let (tenant, cluster) = (&change.tenant_id, &change.cluster_id);
    let key = change.workload.to_string();
    for _ in 0..3 {
        let (mut state, version) = state(store, tenant, cluster).await?;
        if let Some(active) = state.active(&key) {
            return Err(RequestError::Busy {
                workload: key,
                active: active.to_owned(),
            });
        }
        state.workloads.entry(key.clone()).or_default().active = Some(change.id.clone());
        let writes = vec![
            state_write(tenant, cluster, &state, version)?,
            Write::put(&change_item(change.clone(), 0), PutCondition::IfAbsent)?,
            audit.clone(),
        ];
        match store.transact(writes).await {
            Err(StoreError::StaleVersion { .. } | StoreError::AlreadyExists { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(StoreError::StaleVersion {
        pk: keys::tenant_partition(tenant),
        sk: keys::resize_state(tenant, cluster).sk().to_owned(),
        expected: 0,
    }
    .into())
}

/// Saves a change that goes on.
pub async fn save(store: &Store, item: &mut Item<ResizeChange>) -> Result<(), StoreError> {
    let stored = change_item(item.body.clone(), item.version);
    item.version = store.update_versioned(&stored).await?;
    Ok(())
}

/// Saves a change that ended and frees its workload (a revert raises its memory headroom), in
/// one transaction.
pub async fn finish(
    store: &Store,
    item: &mut Item<ResizeChange>,
    reverted: bool,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let (tenant, cluster) = (item.body.tenant_id.clone(), item.body.cluster_id.clone());
    let key = item.body.workload.to_string();
    for _ in 0..3 {
        let (mut state, version) = state(store, &tenant, &cluster).await?;
        state.finish(&key, reverted, now);
        let writes = vec![
            Write::versioned(&change_item(item.body.clone(), item.version))?,
            state_write(&tenant, &cluster, &state, version)?,
        ];
        match store.transact(writes).await {
            Ok(()) => {
                item.version += 1;
                return Ok(());
            }
            // Another change of the cluster moved the state meanwhile.
            Err(StoreError::StaleVersion { sk, .. })
                if sk.starts_with(keys::prefix::RESIZE_STATE) =>
            {
                continue;
            }
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::StaleVersion {
        pk: keys::tenant_partition(&tenant),
        sk: keys::resize_state(&tenant, &cluster).sk().to_owned(),
        expected: 0,
    })
}

/// The cluster's changes, newest first.
pub async fn recent(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    limit: u32,
) -> Result<Vec<ResizeChange>, StoreError> {
    Ok(store
        .query::<ResizeChange>(
            &Query::partition(keys::tenant_partition(tenant))
                .prefix(keys::resize_changes_prefix(cluster))
                .newest_first()
                .limit(limit),
        )
        .await?
        .items
        .into_iter()
        .map(|i| i.body)
        .collect())
}

/// Every change the scheduler has work on, across tenants.
pub async fn active(store: &Store) -> Result<Vec<Item<ResizeChange>>, StoreError> {
    store
        .query_all::<ResizeChange>(&Query::gsi1(keys::ACTIVE_RESIZES_PARTITION))
        .await
}
