//! Sending signed actions to a cluster's agent and recording them, for every issuer: rollouts,
//! hibernation, the API and the interruption handler (which records concurrently
//! with its other writes, so it uses [`deliver`] and [`record_item`] apart).

use spotwise_aws::queue::{Fifo, QueueError};
use spotwise_aws::{Queue, SealError, SecretContext, Vault};
use spotwise_core::action::{ActionRecord, ActionStatus, AgentAction};
use spotwise_core::domain::{Cluster, ClusterSecret};
use spotwise_core::{Classify, ClusterId, Disposition, TenantId};
use time::OffsetDateTime;

use crate::keys;
use crate::{Item, PutCondition, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl Classify for DispatchError {
    fn disposition(&self) -> Disposition {
        match self {
            DispatchError::Store(e) => e.disposition(),
            DispatchError::Queue(e) => e.disposition(),
            DispatchError::Seal(e) => e.disposition(),
        }
    }
}

/// Where a cluster's agent listens and the key its actions are signed with.
pub struct AgentChannel {
    pub queue_url: String,
    pub secret: Vec<u8>,
}

/// What a cluster's sealed HMAC key is bound to.
pub fn cluster_secret_context<'a>(
    tenant: &'a TenantId,
    cluster: &'a ClusterId,
) -> SecretContext<'a> {
    SecretContext {
        purpose: "cluster-secret",
        tenant: tenant.as_str(),
        resource: cluster.as_str(),
    }
}

/// The item that keeps a cluster's HMAC key, sealed.
pub async fn secret_item(
    vault: &Vault,
    tenant: &TenantId,
    cluster: &ClusterId,
    secret: &[u8],
) -> Result<Item<ClusterSecret>, SealError> {
    let sealed = vault
        .seal(secret, cluster_secret_context(tenant, cluster))
        .await?;
    Ok(Item::new(
        keys::cluster_secret(tenant, cluster),
        ClusterSecret { sealed },
    ))
}

/// The cluster's agent channel; `None` until an agent is installed (queue and secret both set).
pub async fn channel(
    store: &Store,
    vault: &Vault,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<AgentChannel>, DispatchError> {
    Ok(cluster_channel(store, vault, tenant, cluster).await?.1)
}

/// The cluster's record (`None` when there is none) and its agent channel, read together.
pub async fn cluster_channel(
    store: &Store,
    vault: &Vault,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<(Option<Cluster>, Option<AgentChannel>), DispatchError> {
    let (cluster_key, secret_key) = (
        keys::cluster(tenant, cluster),
        keys::cluster_secret(tenant, cluster),
    );
    let (record, secret) = tokio::join!(
        store.get::<Cluster>(&cluster_key),
        store.get::<ClusterSecret>(&secret_key),
    );
    let record = record?.map(|c| c.body);
    let (Some(queue_url), Some(secret)) = (
        record.as_ref().and_then(|c| c.agent_queue_url.clone()),
        secret?,
    ) else {
        return Ok((record, None));
    };
    let secret = vault
        .open(&secret.body.sealed, cluster_secret_context(tenant, cluster))
        .await?;
    Ok((record, Some(AgentChannel { queue_url, secret })))
}

/// An action as it left for the agent: signed and queued, or undeliverable without an agent.
pub struct Delivered {
    pub action: AgentAction,
    pub status: ActionStatus,
    pub status_reason: Option<String>,
}

/// Signs and queues `action` when the cluster has an agent (one FIFO group per target, so one
/// action at a time per node or workload).
pub async fn deliver(
    sqs: &aws_sdk_sqs::Client,
    channel: Option<&AgentChannel>,
    action: AgentAction,
) -> Result<Delivered, QueueError> {
    let (action, status, status_reason) = match channel {
        Some(channel) => {
            let signed = action.sign(&channel.secret);
            let fifo = channel.queue_url.ends_with(".fifo").then(|| Fifo {
                group_id: signed.target_name().to_owned(),
                dedup_id: signed.action_id.clone(),
            });
            Queue::new(sqs.clone(), &channel.queue_url)
                .send(&signed, fifo)
                .await?;
            (signed, ActionStatus::Queued, None)
        }
        None => (
            action,
            ActionStatus::Undeliverable,
            Some("the cluster has no agent installed".to_owned()),
        ),
    };
    Ok(Delivered {
        action,
        status,
        status_reason,
    })
}

/// The platform's record of a delivered action, in the tenant's partition and indexed by node
/// for node actions. `source` says what caused it; `instance_id` is the EC2 instance it is for.
pub fn record_item(
    tenant: &TenantId,
    delivered: Delivered,
    source: String,
    instance_id: Option<String>,
    now: OffsetDateTime,
) -> Item<ActionRecord> {
    let Delivered {
        action,
        status,
        status_reason,
    } = delivered;
    let mut item = Item::new(
        keys::action(tenant, &action.action_id),
        ActionRecord {
            tenant_id: tenant.clone(),
            action,
            status,
            status_reason,
            source,
            instance_id,
            previous_replicas: None,
            amendment: None,
            created_at: now,
            updated_at: now,
        },
    );
    let action = &item.body.action;
    if let Some(node) = action.spec.node() {
        let index = keys::node_actions_index(tenant, &action.cluster_id, node, &action.action_id);
        item = item.with_gsi1(index);
    }
    item
}

/// Delivers `action` ([`deliver`]) and records it ([`record_item`]).
pub async fn dispatch(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    tenant: &TenantId,
    channel: Option<&AgentChannel>,
    action: AgentAction,
    source: &str,
    now: OffsetDateTime,
) -> Result<ActionRecord, DispatchError> {
    let delivered = deliver(sqs, channel, action).await?;
    let item = record_item(tenant, delivered, source.to_owned(), None, now);
    store.put(&item, PutCondition::IfAbsent).await?;
    Ok(item.body)
}

/// Ends the actions among `records` the agent has not reported yet (queued, undeliverable) with
/// `status` and `reason`; returns how many. One the agent reports meanwhile keeps its outcome.
pub async fn withdraw_open(
    store: &Store,
    records: Vec<Item<ActionRecord>>,
    status: ActionStatus,
    reason: &str,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let mut withdrawn = 0;
    for mut item in records.into_iter().filter(|i| {
        matches!(
            i.body.status,
            ActionStatus::Queued | ActionStatus::Undeliverable
        )
    }) {
        item.body.status = status;
        item.body.status_reason = Some(reason.to_owned());
        item.body.updated_at = now;
        match store.update_versioned(&item).await {
            Ok(_) => withdrawn += 1,
            Err(StoreError::StaleVersion { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(withdrawn)
}
