//! Cluster snapshots as the agent uploads them (nodes, pods, PDBs, usage): gzip JSON objects in
//! the snapshot bucket, under the tenant's prefix, behind a head item that names the current
//! object and the one before it. Older objects are deleted; the bucket's lifecycle rule removes
//! any left behind. The optimizer plans from them, the cost function allocates from them and
//! the API shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_aws::{Bucket, ObjectError};
use spotwise_core::domain::{Node, Pool};
use spotwise_core::snapshot::Snapshot;
use spotwise_core::snapshot_codec::{self, Decoded, MAX_COMPRESSED_BYTES};
use spotwise_core::{ClusterId, TenantId, rfc3339};
use spotwise_optimizer::Offering;
use spotwise_optimizer::catalog::{self, TypeFilter};
use time::OffsetDateTime;
use tracing::warn;

use crate::keys;
use crate::table::{Item, PutCondition, Query, Store, StoreError};

/// The oldest snapshot any reader accepts.
pub const MAX_USABLE_AGE: time::Duration = time::Duration::hours(6);
/// An unchanged snapshot is confirmed without an upload for this long after its object was
/// written; then the agent uploads it again, so no reader depends on an old object.
pub const FULL_REFRESH: time::Duration = time::Duration::hours(1);
/// How long a presigned upload stays valid.
pub const UPLOAD_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Names the object that holds the cluster's current snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHead {
    /// The object's id (a ULID, chosen when the upload was handed out).
    pub id: String,
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    /// When the cluster last looked like this: the upload, or a later unchanged confirmation.
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: OffsetDateTime,
    /// Hex SHA-256 of the snapshot JSON.
    pub sha256: String,
    pub nodes: usize,
    pub pods: usize,
    pub region: Option<String>,
    /// The object before this one, kept until the next upload replaces it.
    #[serde(default)]
    pub previous: Option<String>,
}

impl SnapshotHead {
    /// Whether an upload with this digest can be skipped.
    pub fn unchanged(&self, sha256: &str, now: OffsetDateTime) -> bool {
        self.sha256 == sha256 && now - self.uploaded_at < FULL_REFRESH
    }
}

/// Why there is no snapshot to work from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    Stale {
        taken_at: String,
    },
    /// The head names an object that is not in the bucket (never uploaded, or expired).
    Gone,
    Unreadable {
        reason: String,
    },
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Missing => f.write_str("the agent has uploaded no snapshot"),
            Unusable::Stale { taken_at } => {
                write!(f, "the latest snapshot is stale (taken {taken_at})")
            }
            Unusable::Gone => f.write_str("the latest snapshot's object is gone"),
            Unusable::Unreadable { reason } => {
                write!(f, "the latest snapshot cannot be read: {reason}")
            }
        }
    }
}

pub async fn head(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<Item<SnapshotHead>>, StoreError> {
    store
        .get::<SnapshotHead>(&keys::snapshot_head(tenant, cluster))
        .await
}

/// A new object id for an upload.
pub fn new_id() -> String {
    ulid::Ulid::new().to_string().to_ascii_lowercase()
}

/// Reads and decodes one stored snapshot object.
pub async fn read(
    bucket: &Bucket,
    tenant: &TenantId,
    cluster: &ClusterId,
    id: &str,
) -> Result<Result<Decoded, Unusable>, StoreError> {
    let key = keys::snapshot_object(tenant, cluster, id);
    let bytes = match bucket.get(&key, MAX_COMPRESSED_BYTES).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(Err(Unusable::Gone)),
        Err(ObjectError::Aws(failure)) => return Err(failure.into()),
        Err(err @ ObjectError::TooLarge { .. }) => {
            return Ok(Err(Unusable::Unreadable {
                reason: err.to_string(),
            }));
        }
    };
    Ok(
        snapshot_codec::decode(&bytes).map_err(|err| Unusable::Unreadable {
            reason: format!("object {key}: {err}"),
        }),
    )
}

/// Makes an uploaded object the cluster's current snapshot. The head it replaces (`replacing`,
/// as read before) becomes the previous one, and the object before that is deleted. A head that
/// changed since it was read fails with a version conflict, and nothing is deleted.
pub async fn commit(
    store: &Store,
    bucket: &Bucket,
    (id, snapshot, sha256): (&str, &Snapshot, &str),
    replacing: Option<Item<SnapshotHead>>,
    (tenant, cluster): (&TenantId, &ClusterId),
    taken_at: OffsetDateTime,
) -> Result<SnapshotHead, StoreError> {
    let head = SnapshotHead {
        id: id.to_owned(),
        tenant_id: tenant.clone(),
        cluster_id: cluster.clone(),
        taken_at,
        uploaded_at: taken_at,
        sha256: sha256.to_owned(),
        nodes: snapshot.nodes.len(),
        pods: snapshot.pods.len() + snapshot.daemon_pods.len(),
        region: snapshot.region.clone(),
        previous: replacing.as_ref().map(|old| old.body.id.clone()),
    };
    let mut item = Item::new(keys::snapshot_head(tenant, cluster), &head)
        .with_gsi1(keys::snapshotted_clusters_index(tenant, cluster));
    match &replacing {
        Some(old) => {
            item.version = old.version;
            store.update_versioned(&item).await?;
        }
        None => store.put(&item, PutCondition::IfAbsent).await?,
    }
    if let Some(expired) = replacing.and_then(|old| old.body.previous) {
        let key = keys::snapshot_object(tenant, cluster, &expired);
        if let Err(err) = bucket.delete(&key).await {
            warn!(key, error = %err, "old snapshot object not deleted; the lifecycle rule removes it");
        }
    }
    Ok(head)
}

/// Records that the cluster still looks like its current snapshot, without an upload.
pub async fn confirm_unchanged(
    store: &Store,
    mut head: Item<SnapshotHead>,
    now: OffsetDateTime,
) -> Result<SnapshotHead, StoreError> {
    head.body.taken_at = now;
    store.update_versioned(&head).await?;
    Ok(head.body)
}

/// Stores a snapshot in one step (the CLI, seeding, tests): writes the object, then commits it.
pub async fn put(
    store: &Store,
    bucket: &Bucket,
    tenant: &TenantId,
    cluster: &ClusterId,
    snapshot: &Snapshot,
    taken_at: OffsetDateTime,
) -> Result<String, StoreError> {
    let encoded = snapshot_codec::encode(snapshot).map_err(|err| {
        let key = keys::snapshot_head(tenant, cluster);
        StoreError::Encode {
            pk: key.pk().to_owned(),
            sk: key.sk().to_owned(),
            reason: err.to_string(),
        }
    })?;
    let id = new_id();
    bucket
        .put_gzip_json(&keys::snapshot_object(tenant, cluster, &id), encoded.gzip)
        .await?;
    let replacing = head(store, tenant, cluster).await?;
    commit(
        store,
        bucket,
        (&id, snapshot, &encoded.sha256),
        replacing,
        (tenant, cluster),
        taken_at,
    )
    .await?;
    Ok(id)
}

/// The cluster's current snapshot, if it is readable and no older than `max_age`.
pub async fn load(
    store: &Store,
    bucket: &Bucket,
    tenant: &TenantId,
    cluster: &ClusterId,
    now: OffsetDateTime,
    max_age: time::Duration,
) -> Result<Result<(SnapshotHead, Snapshot), Unusable>, StoreError> {
    let Some(head) = head(store, tenant, cluster).await? else {
        return Ok(Err(Unusable::Missing));
    };
    let head = head.body;
    if now - head.taken_at > max_age {
        return Ok(Err(Unusable::Stale {
            taken_at: rfc3339(head.taken_at),
        }));
    }
    Ok(read(bucket, tenant, cluster, &head.id)
        .await?
        .map(|decoded| (head, decoded.snapshot)))
}

/// Clusters with an uploaded snapshot, across tenants, for the scheduled fan-outs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshotted {
    pub fresh: Vec<(TenantId, ClusterId)>,
    /// Clusters whose agent has not reported within the age limit.
    pub stale: usize,
}

pub async fn snapshotted_clusters(
    store: &Store,
    now: OffsetDateTime,
    max_age: time::Duration,
) -> Result<Snapshotted, StoreError> {
    /// Only the head fields the fan-out needs.
    #[derive(Deserialize)]
    struct Head {
        tenant_id: TenantId,
        cluster_id: ClusterId,
        #[serde(with = "time::serde::rfc3339")]
        taken_at: OffsetDateTime,
    }
    let heads = store
        .query_all::<Head>(&Query::gsi1(keys::SNAPSHOTTED_CLUSTERS_PARTITION))
        .await?;
    let total = heads.len();
    let fresh: Vec<(TenantId, ClusterId)> = heads
        .into_iter()
        .filter(|head| now - head.body.taken_at <= max_age)
        .map(|head| (head.body.tenant_id, head.body.cluster_id))
        .collect();
    Ok(Snapshotted {
        stale: total - fresh.len(),
        fresh,
    })
}

/// A pool's current item as the scraper writes it, indexed under its region for
/// [`region_offerings`].
pub fn current_pool_item(pool: &Pool) -> Item<&Pool> {
    Item::new(keys::pool_current(&pool.key), pool).with_gsi1(keys::region_pools_index(&pool.key))
}

/// A region's pools as offerings in the zones a cluster uses.
pub struct RegionOfferings {
    /// Pools the region has (0: the scraper has not run for it).
    pub pools: usize,
    /// Zone id (`use1-az1`) to the name the cluster sees (`us-east-1a`).
    pub zone_names: BTreeMap<String, String>,
    pub offerings: Vec<Offering>,
}

/// Zone ids are mapped to names from the snapshot's node labels, completed by what discovery
/// recorded for the cluster's nodes (zone names differ between accounts; ids do not).
pub async fn region_offerings(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    snapshot: &Snapshot,
    region: &str,
    filter: &TypeFilter,
) -> Result<RegionOfferings, StoreError> {
    let pools: Vec<Pool> = store
        .query_all::<Pool>(&Query::gsi1(keys::region_pools_partition(region)))
        .await?
        .into_iter()
        .map(|item| item.body)
        .collect();
    let mut zone_names = snapshot.zone_names();
    let nodes = store
        .query_all::<Node>(
            &Query::partition(keys::cluster_partition(tenant, cluster)).prefix(keys::prefix::NODE),
        )
        .await?;
    for node in nodes {
        if let Some(id) = node.body.zone_id {
            zone_names.entry(id).or_insert(node.body.zone);
        }
    }
    Ok(RegionOfferings {
        pools: pools.len(),
        offerings: catalog::offerings_from_pools(&pools, &zone_names, filter),
        zone_names,
    })
}
