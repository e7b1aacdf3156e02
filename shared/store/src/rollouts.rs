//! Rollouts as stored: one item per approved recommendation, listed in the scheduler's index
//! while it has work on it (unfinished, or waiting to try spot again).

use std::collections::HashMap;

use spotwise_aws::Bucket;
use spotwise_core::domain::{CapacityType, Policy};
use spotwise_core::snapshot::{CurrentNode, Snapshot};
use spotwise_core::{ClusterId, TenantId};
use spotwise_optimizer::catalog::{self, TypeFilter};
use spotwise_optimizer::model::Offering;
use spotwise_optimizer::recommendation::Recommendation;
use spotwise_optimizer::rollout::{
    self, Approval, Backend, Figures, NodeSize, PlannedNodes, Rollout,
};
use time::OffsetDateTime;

use crate::snapshots::{self, Unusable};
use crate::{Item, PutCondition, Query, Store, StoreError, keys};

/// The source recorded on the actions a rollout sends.
pub const ACTOR: &str = "scheduler:rollout";
/// Snapshots older than this do not say which nodes a rollout keeps and replaces.
const SNAPSHOT_MAX_AGE: time::Duration = time::Duration::hours(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no usable snapshot of the cluster to roll the plan out on: {0}")]
    Snapshot(Unusable),
    /// The policy's backend cannot realise the plan on this cluster (Karpenter not installed,
    /// no NodePool to take a node class from).
    #[error("{0}")]
    Backend(String),
}

/// A node group raised by one for an interrupted instance, so its pods have somewhere to go
/// before the instance is reclaimed; lowered again when the instance is gone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Replacement {
    pub nodegroup: String,
    #[serde(with = "time::serde::rfc3339")]
    pub raised_at: OffsetDateTime,
    pub released: bool,
}

/// The stored item of `rollout`, indexed for the scheduler while it has work.
pub fn item(rollout: Rollout, version: u64) -> Item<Rollout> {
    let key = keys::rollout(&rollout.tenant_id, &rollout.cluster_id, rollout.revision);
    let index = (!rollout.status.is_final() || rollout.spot_retry_at.is_some()).then(|| {
        keys::active_rollouts_index(&rollout.tenant_id, &rollout.cluster_id, rollout.revision)
    });
    let mut item = Item::new(key, rollout);
    item.version = version;
    match index {
        Some(index) => item.with_gsi1(index),
        None => item,
    }
}

/// Prices nodes from the region's offerings (type, zone and capacity type).
pub fn pricer(offerings: &[Offering]) -> impl Fn(&CurrentNode) -> Option<f64> + '_ {
    let prices: HashMap<(&str, &str, CapacityType), f64> = offerings
        .iter()
        .map(|o| {
            (
                (o.instance_type.as_str(), o.zone.as_str(), o.capacity_type),
                o.price_hr,
            )
        })
        .collect();
    move |node| {
        prices
            .get(&(
                node.instance_type.as_str(),
                node.zone.as_str(),
                node.capacity_type,
            ))
            .copied()
    }
}

/// The cluster's newest rollout, when it has not ended.
pub async fn in_progress(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<Rollout>, StoreError> {
    Ok(store
        .query::<Rollout>(
            &Query::partition(keys::tenant_partition(tenant))
                .prefix(keys::rollouts_prefix(cluster))
                .newest_first()
                .limit(1),
        )
        .await?
        .items
        .into_iter()
        .map(|item| item.body)
        .find(|rollout| !rollout.status.is_final()))
}

/// Every offering of the region of the cluster (in `region` unless its snapshot says): the
/// prices of the nodes it runs or may run.
pub async fn offerings(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
    snapshot: &Snapshot,
    region: &str,
) -> Result<Vec<Offering>, StoreError> {
    let region = snapshot.region.as_deref().unwrap_or(region);
    Ok(
        snapshots::region_offerings(store, tenant, cluster, snapshot, region, &TypeFilter::any())
            .await?
            .offerings,
    )
}

/// Starts the rollout of an approved recommendation on the cluster (in `region`) as its latest
/// snapshot shows it. Starting twice returns the rollout the first start stored.
pub async fn start(
    store: &Store,
    bucket: &Bucket,
    recommendation: &Recommendation,
    region: &str,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Rollout, StartError> {
    let (tenant, cluster) = (&recommendation.tenant_id, &recommendation.cluster_id);
    let key = keys::rollout(tenant, cluster, recommendation.revision);
    if let Some(existing) = store.get::<Rollout>(&key).await? {
        return Ok(existing.body);
    }
    let (_, snapshot) = snapshots::load(store, bucket, tenant, cluster, now, SNAPSHOT_MAX_AGE)
        .await?
        .map_err(StartError::Snapshot)?;
    let offerings = offerings(store, tenant, cluster, &snapshot, region).await?;
    let price = pricer(&offerings);
    let before = Figures::of_snapshot(&snapshot, &price);
    let mix: Vec<PlannedNodes> = recommendation
        .node_mix
        .iter()
        .map(|m| PlannedNodes {
            instance_type: m.instance_type.clone(),
            zone: m.zone.clone(),
            capacity_type: if m.capacity_type == "spot" {
                CapacityType::Spot
            } else {
                CapacityType::OnDemand
            },
            nodes: m.nodes,
        })
        .collect();
    // Other types a spot group may launch obey the policy's exclusions, as the plan did.
    let launchable: Vec<Offering> = offerings
        .iter()
        .filter(|o| {
            let excluded = (policy.exclude_burstable && o.is_burstable())
                || (policy.exclude_previous_generation && o.is_previous_generation());
            !excluded
        })
        .cloned()
        .collect();
    let similar = |instance_type: &str| rollout::similar_types(&launchable, instance_type);
    let approval = Approval {
        tenant,
        cluster,
        revision: recommendation.revision,
        mix: &mix,
        planned_cost_hr: recommendation.cost_hr,
        before,
        snapshot: &snapshot,
        wave_size: policy.max_disrupted_nodes,
        now,
    };
    let prepared = match rollout::choose_backend(policy.rollout_backend, &snapshot)
        .map_err(StartError::Backend)?
    {
        Backend::ManagedNodeGroups => rollout::prepare(&approval, &similar),
        Backend::Karpenter => {
            let size = |instance_type: &str| {
                offerings
                    .iter()
                    .find(|o| o.instance_type == instance_type)
                    .map(|o| NodeSize {
                        capacity: catalog::capacity(o),
                        allocatable: (o.cpu_m, o.mem_mib),
                    })
            };
            let karpenter = snapshot.karpenter.clone().unwrap_or_default();
            rollout::prepare_karpenter(&approval, &karpenter, &size).map_err(StartError::Backend)?
        }
    };
    match store
        .put(&item(prepared.clone(), 0), PutCondition::IfAbsent)
        .await
    {
        Ok(()) => Ok(prepared),
        Err(StoreError::AlreadyExists { .. }) => Ok(store
            .get::<Rollout>(&key)
            .await?
            .map_or(prepared, |i| i.body)),
        Err(err) => Err(err.into()),
    }
}
