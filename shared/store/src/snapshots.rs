//! Cluster snapshots as the agent uploads them (nodes, pods, PDBs, usage), stored in chunks so
//! a 20,000-pod cluster fits DynamoDB's item limit, behind a head item that names the complete
//! chunk set. The optimizer plans from them and the cost function allocates from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_core::domain::{Node, Pool};
use spotwise_core::snapshot::{CurrentNode, Overhead, Pdb, Snapshot, SnapshotPod};
use spotwise_core::{ClusterId, TenantId, rfc3339};
use spotwise_optimizer::Offering;
use spotwise_optimizer::catalog::{self, TypeFilter};
use time::OffsetDateTime;

use crate::keys;
use crate::table::{Item, PutCondition, Query, Store, StoreError};

/// Pods (or nodes x5) per stored chunk, well under DynamoDB's 400 KB item limit.
const PODS_PER_CHUNK: usize = 1_000;
/// Chunks outlive any reader's age limit by this much, so a reader never finds them gone.
const CHUNK_RETENTION: time::Duration = time::Duration::days(2);
/// The oldest snapshot any reader accepts.
pub const MAX_USABLE_AGE: time::Duration = time::Duration::hours(6);

/// Names the chunk set that holds the cluster's current snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHead {
    /// Names the chunk set (a ULID): each upload writes a new one.
    pub id: String,
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub chunks: u32,
    pub pdbs: Vec<Pdb>,
    pub daemonset_overhead: Overhead,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub nodes: Vec<CurrentNode>,
    pub pods: Vec<SnapshotPod>,
    #[serde(default)]
    pub daemon_pods: Vec<SnapshotPod>,
}

/// Why there is no snapshot to work from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    Stale { taken_at: String },
    Incomplete { expected: u32, found: usize },
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Missing => f.write_str("the agent has uploaded no snapshot"),
            Unusable::Stale { taken_at } => {
                write!(f, "the latest snapshot is stale (taken {taken_at})")
            }
            Unusable::Incomplete { expected, found } => write!(
                f,
                "the latest snapshot is incomplete ({found} of {expected} chunks)"
            ),
        }
    }
}

/// Stores a snapshot: a new chunk set first, then the head that points at it, so a
/// reader sees the old snapshot or the new one, never a mix.
pub async fn put(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    snapshot: &Snapshot,
    taken_at: OffsetDateTime,
) -> Result<String, StoreError> {
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let pod_chunks = |pods: &[SnapshotPod], daemon: bool| -> Vec<SnapshotChunk> {
        pods.chunks(PODS_PER_CHUNK)
            .map(|pods| SnapshotChunk {
                pods: if daemon { Vec::new() } else { pods.to_vec() },
                daemon_pods: if daemon { pods.to_vec() } else { Vec::new() },
                ..SnapshotChunk::default()
            })
            .collect()
    };
    let mut chunks = pod_chunks(&snapshot.pods, false);
    chunks.extend(pod_chunks(&snapshot.daemon_pods, true));
    chunks.extend(
        snapshot
            .nodes
            .chunks(PODS_PER_CHUNK / 5)
            .map(|nodes| SnapshotChunk {
                nodes: nodes.to_vec(),
                ..SnapshotChunk::default()
            }),
    );
    let expires = taken_at + MAX_USABLE_AGE + CHUNK_RETENTION;
    let items: Vec<Item<SnapshotChunk>> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            Item::new(
                keys::snapshot_chunk(tenant, cluster, &id, u32::try_from(i).unwrap_or(u32::MAX)),
                chunk,
            )
            .expiring_at(expires)
        })
        .collect();
    store.batch_put(&items).await?;
    let head = SnapshotHead {
        id: id.clone(),
        tenant_id: tenant.clone(),
        cluster_id: cluster.clone(),
        taken_at,
        chunks: u32::try_from(items.len()).unwrap_or(u32::MAX),
        pdbs: snapshot.pdbs.clone(),
        daemonset_overhead: snapshot.daemonset_overhead,
        region: snapshot.region.clone(),
    };
    store
        .put(
            &Item::new(keys::snapshot_head(tenant, cluster), head)
                .with_gsi1(keys::snapshotted_clusters_index(tenant, cluster)),
            PutCondition::Always,
        )
        .await?;
    Ok(id)
}

/// The cluster's current snapshot, if it is complete and no older than `max_age`.
pub async fn load(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    now: OffsetDateTime,
    max_age: time::Duration,
) -> Result<Result<(SnapshotHead, Snapshot), Unusable>, StoreError> {
    let Some(head) = store
        .get::<SnapshotHead>(&keys::snapshot_head(tenant, cluster))
        .await?
    else {
        return Ok(Err(Unusable::Missing));
    };
    let head = head.body;
    if now - head.taken_at > max_age {
        return Ok(Err(Unusable::Stale {
            taken_at: rfc3339(head.taken_at),
        }));
    }
    let chunks = store
        .query_all::<SnapshotChunk>(
            &Query::partition(keys::cluster_partition(tenant, cluster))
                .prefix(keys::snapshot_chunks_prefix(&head.id)),
        )
        .await?;
    if chunks.len() != head.chunks as usize {
        return Ok(Err(Unusable::Incomplete {
            expected: head.chunks,
            found: chunks.len(),
        }));
    }
    let mut snapshot = Snapshot {
        pdbs: head.pdbs.clone(),
        daemonset_overhead: head.daemonset_overhead,
        region: head.region.clone(),
        ..Snapshot::default()
    };
    for chunk in chunks {
        snapshot.nodes.extend(chunk.body.nodes);
        snapshot.pods.extend(chunk.body.pods);
        snapshot.daemon_pods.extend(chunk.body.daemon_pods);
    }
    Ok(Ok((head, snapshot)))
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
