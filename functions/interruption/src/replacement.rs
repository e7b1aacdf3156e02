//! Replacement before loss: when a spot warning or rebalance recommendation hits a node of a
//! Spotwise spot node group, that group asks EKS for one more node at once, so the drain has
//! somewhere to put the pods before the two minutes run out. The group's several instance
//! types let EKS launch the replacement from another pool. When the instance is gone, the
//! group comes back to its size.
//!
//! A replacement record per instance makes both happen once, whatever the number and order of
//! the instance's signals. Failures are logged and counted, never fail the event: the drain
//! matters more than the replacement.

use aws_sdk_eks::types::NodegroupScalingConfig;
use spotwise_aws::AwsFailure;
use spotwise_core::domain::{Account, Cluster, InstanceLocation};
use spotwise_core::interruption::{Signal, SignalKind};
use spotwise_store::rollouts::Replacement;
use spotwise_store::{Item, PutCondition, StoreError, keys};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{Deps, count};

/// A replacement record outlives any instance's last signal.
const RECORD_TTL: time::Duration = time::Duration::days(2);

/// Raises the instance's Spotwise spot group by one, once per instance.
pub async fn raise(
    deps: &Deps,
    signal: &Signal,
    node: &InstanceLocation,
    instance_id: &str,
    cluster: Option<&Cluster>,
    now: OffsetDateTime,
) {
    if !matches!(
        signal.kind,
        SignalKind::SpotInterruption | SignalKind::RebalanceRecommendation
    ) {
        return;
    }
    let (Some(group), Some(cluster)) = (spot_group(node), cluster) else {
        return;
    };
    let key = keys::capacity_replacement(&node.tenant_id, &node.cluster_id, instance_id);
    let record = Item::new(
        key.clone(),
        Replacement {
            nodegroup: group.to_owned(),
            raised_at: now,
            released: false,
        },
    )
    .expiring_at(now + RECORD_TTL);
    match deps.store.put(&record, PutCondition::IfAbsent).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists { .. }) => return,
        Err(err) => {
            warn!(%instance_id, error = %err, "replacement not recorded; not raised");
            return;
        }
    }
    match resize(deps, cluster, group, 1).await {
        Ok(desired) => {
            info!(%instance_id, nodegroup = %group, desired, "replacement capacity requested");
            count(deps, "replacements_raised", now).await;
        }
        Err(err) => {
            warn!(%instance_id, nodegroup = %group, error = %err, "replacement capacity not requested");
            count(deps, "replacements_failed", now).await;
            // Given back, so the instance's next signal tries again.
            if let Err(err) = deps.store.delete(&key).await {
                warn!(%instance_id, error = %err, "replacement record not removed");
            }
        }
    }
}

/// The instance is gone: its group, raised for it, comes back down by one.
pub async fn release(
    deps: &Deps,
    node: &InstanceLocation,
    instance_id: &str,
    cluster: Option<&Cluster>,
    now: OffsetDateTime,
) {
    let key = keys::capacity_replacement(&node.tenant_id, &node.cluster_id, instance_id);
    let mut item = match deps.store.get::<Replacement>(&key).await {
        Ok(Some(item)) if !item.body.released => item,
        Ok(_) => return,
        Err(err) => {
            warn!(%instance_id, error = %err, "replacement record not read");
            return;
        }
    };
    // Claimed first: a second departure signal finds it released.
    item.body.released = true;
    match deps.store.update_versioned(&item).await {
        Ok(_) => {}
        Err(StoreError::StaleVersion { .. }) => return,
        Err(err) => {
            warn!(%instance_id, error = %err, "replacement record not updated");
            return;
        }
    }
    let Some(cluster) = cluster else {
        return;
    };
    match resize(deps, cluster, &item.body.nodegroup, -1).await {
        Ok(desired) => {
            info!(%instance_id, nodegroup = %item.body.nodegroup, desired, "replacement capacity released");
            count(deps, "replacements_released", now).await;
        }
        Err(err) => {
            warn!(%instance_id, nodegroup = %item.body.nodegroup, error = %err, "replacement capacity not released");
        }
    }
}

fn spot_group(node: &InstanceLocation) -> Option<&str> {
    node.nodegroup
        .as_deref()
        .filter(|g| spotwise_optimizer::rollout::is_spotwise_spot_group(g))
}

#[derive(Debug, thiserror::Error)]
enum ResizeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("assuming the account's role: {0}")]
    Link(#[from] spotwise_aws::cross_account::LinkError),
    #[error("{0}")]
    Aws(#[from] AwsFailure),
    #[error("account {0} is not linked")]
    NotLinked(String),
}

/// Changes the group's desired size by `by`; returns the new size.
async fn resize(deps: &Deps, cluster: &Cluster, group: &str, by: i32) -> Result<i32, ResizeError> {
    let account = deps
        .store
        .get::<Account>(&keys::account(&cluster.tenant_id, &cluster.account_id))
        .await?
        .ok_or_else(|| ResizeError::NotLinked(cluster.account_id.clone()))?;
    let config = deps
        .accounts
        .config_in(
            &account.body.role_arn,
            &account.body.external_id,
            &cluster.region,
        )
        .await?;
    let eks = aws_sdk_eks::Client::new(&config);
    let described = eks
        .describe_nodegroup()
        .cluster_name(&cluster.name)
        .nodegroup_name(group)
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("eks:DescribeNodegroup", e))?;
    let scaling = described.nodegroup().and_then(|n| n.scaling_config());
    let desired = scaling
        .and_then(NodegroupScalingConfig::desired_size)
        .unwrap_or(0);
    let target = (desired + by).max(0);
    let min = scaling
        .and_then(NodegroupScalingConfig::min_size)
        .unwrap_or(0)
        .min(target);
    let max = scaling
        .and_then(NodegroupScalingConfig::max_size)
        .unwrap_or(1)
        .max(target)
        .max(1);
    eks.update_nodegroup_config()
        .cluster_name(&cluster.name)
        .nodegroup_name(group)
        .scaling_config(
            NodegroupScalingConfig::builder()
                .min_size(min)
                .max_size(max)
                .desired_size(target)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("eks:UpdateNodegroupConfig", e))?;
    Ok(target)
}
