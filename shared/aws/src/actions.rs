//! Sending signed actions to a cluster's agent and recording them, for every issuer that is
//! not on the interruption handler's latency-critical path (optimizer, hibernation, API).

use spotwise_core::action::{ActionRecord, ActionStatus, AgentAction};
use spotwise_core::domain::{Cluster, ClusterSecret};
use spotwise_core::keys;
use spotwise_core::{Classify, ClusterId, Disposition, TenantId};
use time::OffsetDateTime;

use crate::queue::{Fifo, QueueError};
use crate::{Item, PutCondition, Queue, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Classify for DispatchError {
    fn disposition(&self) -> Disposition {
        match self {
            DispatchError::Store(e) => e.disposition(),
            DispatchError::Queue(e) => e.disposition(),
        }
    }
}

/// Where a cluster's agent listens and the key its actions are signed with.
pub struct AgentChannel {
    pub queue_url: String,
    pub secret: Vec<u8>,
}

/// The cluster's agent channel; `None` until an agent is installed (queue and secret both set).
pub async fn channel(
    store: &Store,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Result<Option<AgentChannel>, StoreError> {
    let (cluster_key, secret_key) = (
        keys::cluster(tenant, cluster),
        keys::cluster_secret(cluster),
    );
    let (record, secret) = tokio::join!(
        store.get::<Cluster>(&cluster_key),
        store.get::<ClusterSecret>(&secret_key),
    );
    Ok(record?
        .and_then(|c| c.body.agent_queue_url)
        .zip(secret?.and_then(|s| hex::decode(s.body.secret_hex).ok()))
        .map(|(queue_url, secret)| AgentChannel { queue_url, secret }))
}

/// Signs and queues `action` when the cluster has an agent, then records it in the tenant's
/// partition (indexed by node for node actions). Without an agent the record says so.
pub async fn dispatch(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    tenant: &TenantId,
    channel: Option<&AgentChannel>,
    action: AgentAction,
    source: &str,
    now: OffsetDateTime,
) -> Result<ActionRecord, DispatchError> {
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
    let record = ActionRecord {
        tenant_id: tenant.clone(),
        action,
        status,
        status_reason,
        source: source.to_owned(),
        instance_id: None,
        created_at: now,
        updated_at: now,
    };
    let mut item = Item::new(
        keys::action(tenant, &record.action.action_id),
        record.clone(),
    );
    if let spotwise_core::action::ActionTarget::Node { name } = &record.action.target {
        item = item.with_gsi1(keys::node_actions_index(
            &record.action.cluster_id,
            name,
            &record.action.action_id,
        ));
    }
    store.put(&item, PutCondition::IfAbsent).await?;
    Ok(record)
}
