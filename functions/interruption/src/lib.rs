//! Interruption handler. EventBridge rules (and Auto Scaling hooks) feed one SQS queue; for each
//! message this function:
//!
//! 1. parses it into a [`Signal`] (or ignores it with a reason; malformed messages fail alone
//!    and reach the DLQ after the queue's receive limit);
//! 2. deduplicates by event id, so redeliveries do nothing;
//! 3. maps each instance to its node through the discovery index (unknown instances are counted
//!    and dropped, never retried);
//! 4. deduplicates by (instance, action kind), so a spot warning, a health event and an ASG hook
//!    for one node yield one drain;
//! 5. signs the agent action and puts it on the cluster's queue, records it, counts the
//!    interruption on its pool (the cross-tenant risk signal the optimizer reads), and notifies.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::try_join_all;
use serde::Deserialize;
use serde_json::json;
use spotwise_aws::queue::QueueError;
use spotwise_aws::{Queue, Vault};
use spotwise_core::action::{
    ActionKind, ActionRecord, ActionSpec, ActionStatus, AgentAction, INTERRUPTION_TAINT,
    LifecycleHook,
};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{
    Node, Notification, Policy, PoolKey, RebalanceResponse, Severity, Taint,
};
use spotwise_core::interruption::{self, ParseError, Parsed, Signal, SignalKind};
use spotwise_core::{Classify, ClusterId, Disposition, TenantId, rfc3339};
use spotwise_lambda::sqs::{BodyError, process_batch};
use spotwise_store::actions::{self, AgentChannel, DispatchError};
use spotwise_store::keys::{self, Key};
use spotwise_store::{Item, PutCondition, Query};
use spotwise_store::{Store, StoreError};
use time::OffsetDateTime;
use tracing::{info, warn};

/// Redeliveries of one event arrive within minutes; a day is ample.
const EVENT_DEDUP_HOLD: Duration = Duration::from_secs(24 * 3600);
/// One drain (or cordon) per node within this window, whatever mix of events asks for it.
const ACTION_DEDUP_HOLD: Duration = Duration::from_secs(3600);
/// How long an interrupted pool is kept out of new spot plans.
const POOL_COOLDOWN: Duration = Duration::from_secs(30 * 60);
/// Daily pool counters are read over a 30-day window; keep a little longer.
const POOL_STATS_RETENTION: Duration = Duration::from_secs(35 * 24 * 3600);
const STATS_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
const CONCURRENCY: usize = 10;

pub struct Config {
    pub common: CommonConfig,
    pub notifications_queue_url: String,
    /// The KMS key cluster secrets are sealed with.
    pub secrets_key_id: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            secrets_key_id: env.required("SECRETS_KEY_ID")?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub sqs: aws_sdk_sqs::Client,
    pub notifications: Queue,
    pub vault: Vault,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            notifications: Queue::new(sqs.clone(), &config.notifications_queue_url),
            vault: Vault::new(sdk, &config.secrets_key_id),
            sqs,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterruptionError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
}

impl Classify for InterruptionError {
    fn disposition(&self) -> Disposition {
        match self {
            InterruptionError::Body(_) | InterruptionError::Parse(_) => Disposition::NonRetryable,
            InterruptionError::Store(e) => e.disposition(),
            InterruptionError::Queue(e) => e.disposition(),
            InterruptionError::Dispatch(e) => e.disposition(),
        }
    }
}

/// What the handler does to the node of an instance that is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeResponse {
    Cordon,
    Drain,
}

impl NodeResponse {
    pub fn kind(self) -> ActionKind {
        match self {
            NodeResponse::Cordon => ActionKind::Cordon,
            NodeResponse::Drain => ActionKind::Drain,
        }
    }
}

/// What happened to one instance of a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    /// An action was issued (and queued when the cluster has an agent).
    Issued {
        action_id: String,
        kind: ActionKind,
        status: ActionStatus,
    },
    /// The same action for this instance was issued recently.
    AlreadyHandled,
    /// The instance is gone: its node was marked departed and its open actions closed.
    Departed {
        closed_actions: usize,
    },
    /// Policy says tell the tenant only.
    NotifiedOnly,
    UnknownInstance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Handled(Vec<(String, InstanceOutcome)>),
    Duplicate,
    Ignored(String),
}

/// The node an instance runs, as the discovery index stores it (a node item).
#[derive(Debug, Deserialize)]
struct IndexedNode {
    tenant_id: TenantId,
    cluster_id: ClusterId,
    name: String,
    zone: String,
    #[serde(default)]
    zone_id: Option<String>,
    instance_type: String,
}

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, CONCURRENCY, |message| handle_message(deps, message)).await)
}

async fn handle_message(deps: &Deps, message: SqsMessage) -> Result<(), InterruptionError> {
    let body = message.body.as_deref().ok_or(BodyError::Missing)?;
    handle_body(deps, body, OffsetDateTime::now_utc())
        .await
        .map(|_| ())
}

pub async fn handle_body(
    deps: &Deps,
    body: &str,
    now: OffsetDateTime,
) -> Result<Outcome, InterruptionError> {
    let signal = match interruption::parse(body)? {
        Parsed::Signal(signal) => signal,
        Parsed::Ignored { reason } => {
            info!(%reason, "message ignored");
            count(deps, "ignored", now).await;
            return Ok(Outcome::Ignored(reason));
        }
    };
    // The claim and the node look-ups are independent: one round trip for both.
    let claim = keys::idempotency("event", &signal.event_id);
    let (claimed, nodes) = tokio::join!(
        deps.store.hold(claim, EVENT_DEDUP_HOLD, now),
        try_join_all(signal.instance_ids.iter().map(|id| lookup_node(deps, id))),
    );
    let Some(held) = claimed? else {
        info!(event_id = %signal.event_id, "duplicate delivery skipped");
        count(deps, "duplicate_events", now).await;
        return Ok(Outcome::Duplicate);
    };
    let handled = match nodes {
        Ok(nodes) => {
            let work = signal
                .instance_ids
                .iter()
                .zip(nodes)
                .map(|(id, node)| handle_instance(deps, &signal, id, node, now));
            try_join_all(work).await
        }
        Err(err) => Err(err),
    };
    // A failure gives the event back so its redelivery is processed; instances already
    // handled are protected by their own action claims.
    let outcomes = held.settle(handled).await?;
    Ok(Outcome::Handled(
        signal.instance_ids.iter().cloned().zip(outcomes).collect(),
    ))
}

async fn lookup_node(
    deps: &Deps,
    instance_id: &str,
) -> Result<Option<IndexedNode>, InterruptionError> {
    let index = keys::instance_index(instance_id);
    let page = deps
        .store
        .query::<IndexedNode>(&Query::gsi1(index.gsi1pk).limit(1))
        .await?;
    Ok(page.items.into_iter().next().map(|item| item.body))
}

async fn handle_instance(
    deps: &Deps,
    signal: &Signal,
    instance_id: &str,
    node: Option<IndexedNode>,
    now: OffsetDateTime,
) -> Result<InstanceOutcome, InterruptionError> {
    let Some(node) = node else {
        warn!(event_id = %signal.event_id, %instance_id, kind = ?signal.kind, "unknown instance dropped");
        count(deps, "unknown_instances", now).await;
        return Ok(InstanceOutcome::UnknownInstance);
    };
    if signal.kind == SignalKind::StateChange {
        return depart(deps, signal, &node, now).await;
    }
    let response = match signal.kind {
        SignalKind::RebalanceRecommendation => match rebalance_policy(deps, &node).await? {
            RebalanceResponse::Cordon => NodeResponse::Cordon,
            RebalanceResponse::Drain => NodeResponse::Drain,
            RebalanceResponse::Notify => {
                notify(deps, signal, &node, instance_id, None, now).await?;
                return Ok(InstanceOutcome::NotifiedOnly);
            }
        },
        _ => NodeResponse::Drain,
    };
    let kind = response.kind();

    // Claim the (instance, kind) pair while reading where and how to send: one round trip.
    let action_claim = keys::idempotency("action", &format!("{instance_id}#{kind}"));
    let (claimed, channel) = tokio::join!(
        deps.store.hold(action_claim, ACTION_DEDUP_HOLD, now),
        actions::channel(&deps.store, &deps.vault, &node.tenant_id, &node.cluster_id),
    );
    let Some(held) = claimed? else {
        info!(event_id = %signal.event_id, %instance_id, %kind, "action already issued for this instance");
        count(deps, "deduplicated_actions", now).await;
        return Ok(InstanceOutcome::AlreadyHandled);
    };
    let issued = match channel {
        Ok(channel) => issue(deps, signal, &node, instance_id, response, channel, now).await,
        Err(err) => Err(err.into()),
    };
    held.settle(issued).await
}

/// Sends the signed action (the time-critical part), then records, counts and notifies
/// concurrently.
async fn issue(
    deps: &Deps,
    signal: &Signal,
    node: &IndexedNode,
    instance_id: &str,
    response: NodeResponse,
    channel: Option<AgentChannel>,
    now: OffsetDateTime,
) -> Result<InstanceOutcome, InterruptionError> {
    let action = build_action(
        signal,
        &node.cluster_id,
        &node.name,
        instance_id,
        response,
        now,
    );
    let delivered = actions::deliver(&deps.sqs, channel.as_ref(), action).await?;
    let item = actions::record_item(
        &node.tenant_id,
        delivered,
        format!("interruption:{}", signal.event_id),
        Some(instance_id.to_owned()),
        now,
    );
    let (action, status) = (&item.body.action, item.body.status);
    let kind = action.kind();
    let pool = async {
        if signal.kind == SignalKind::SpotInterruption {
            record_pool_interruption(deps, signal, node, now).await
        } else {
            Ok(())
        }
    };
    let (recorded, notified, pooled, ()) = tokio::join!(
        deps.store.put(&item, PutCondition::IfAbsent),
        notify(deps, signal, node, instance_id, Some((action, status)), now),
        pool,
        count(deps, "actions", now),
    );
    recorded?;
    notified?;
    pooled?;
    info!(event_id = %signal.event_id, %instance_id, tenant = %node.tenant_id, cluster = %node.cluster_id,
          node = %node.name, action_id = %action.action_id, %kind, ?status, deadline = %rfc3339(action.not_after), "action issued");
    Ok(InstanceOutcome::Issued {
        action_id: action.action_id.clone(),
        kind,
        status,
    })
}

/// The unsigned agent action for one instance of a signal: the handler's pure work.
pub fn build_action(
    signal: &Signal,
    cluster_id: &ClusterId,
    node_name: &str,
    instance_id: &str,
    response: NodeResponse,
    now: OffsetDateTime,
) -> AgentAction {
    let deadline = interruption::action_deadline(signal, now);
    let node = node_name.to_owned();
    let spec = match response {
        NodeResponse::Cordon => ActionSpec::Cordon { node },
        NodeResponse::Drain => ActionSpec::Drain {
            node,
            taint: Some(Taint {
                key: INTERRUPTION_TAINT.into(),
                value: Some(signal.kind.as_str().into()),
                effect: "NoSchedule".into(),
            }),
            lifecycle_hook: signal.lifecycle.as_ref().map(|lifecycle| LifecycleHook {
                auto_scaling_group: lifecycle.auto_scaling_group.clone(),
                hook_name: lifecycle.hook_name.clone(),
                token: lifecycle.token.clone(),
                instance_id: instance_id.to_owned(),
            }),
        },
    };
    AgentAction {
        action_id: ulid::Ulid::new().to_string().to_ascii_lowercase(),
        cluster_id: cluster_id.clone(),
        spec,
        reason: format!("{} for {instance_id}", kind_label(signal.kind)),
        issued_at: now,
        not_after: deadline,
        signature: String::new(),
    }
}

/// The instance is stopping or gone: keep the node record (history) but mark it, and close the
/// actions that can no longer happen.
async fn depart(
    deps: &Deps,
    signal: &Signal,
    node: &IndexedNode,
    now: OffsetDateTime,
) -> Result<InstanceOutcome, InterruptionError> {
    let node_key = keys::node(&node.tenant_id, &node.cluster_id, &node.name);
    for _ in 0..3 {
        let Some(mut item) = deps.store.get::<Node>(&node_key).await? else {
            break;
        };
        if item.body.departed_at.is_some() {
            break;
        }
        item.body.departed_at = Some(now);
        match deps.store.update_versioned(&item).await {
            Ok(_) => break,
            Err(StoreError::StaleVersion { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    let records = deps
        .store
        .query_all::<ActionRecord>(&Query::gsi1(keys::node_actions_partition(
            &node.tenant_id,
            &node.cluster_id,
            &node.name,
        )))
        .await?;
    let reason = format!("instance {}", signal.state.as_deref().unwrap_or("gone"));
    let closed_actions =
        actions::withdraw_open(&deps.store, records, ActionStatus::Closed, &reason, now).await?;
    info!(event_id = %signal.event_id, node = %node.name, state = ?signal.state, closed_actions, "node departed");
    Ok(InstanceOutcome::Departed { closed_actions })
}

async fn rebalance_policy(
    deps: &Deps,
    node: &IndexedNode,
) -> Result<RebalanceResponse, InterruptionError> {
    let policy = deps
        .store
        .get::<Policy>(&keys::policy(&node.tenant_id, &node.cluster_id))
        .await?;
    Ok(policy
        .map(|p| p.body.rebalance)
        .unwrap_or(Policy::default().rebalance))
}

/// Counts the interruption on its pool and cools the pool down. Pools are keyed by zone id,
/// which is the same for every account; nodes without one are not counted cross-tenant.
async fn record_pool_interruption(
    deps: &Deps,
    signal: &Signal,
    node: &IndexedNode,
    now: OffsetDateTime,
) -> Result<(), InterruptionError> {
    let Some(zone_id) = &node.zone_id else {
        warn!(node = %node.name, zone = %node.zone, "node has no zone id; interruption not counted on its pool");
        return Ok(());
    };
    let region = signal
        .region
        .clone()
        .unwrap_or_else(|| region_of_zone(&node.zone).to_owned());
    let pool = PoolKey {
        region,
        zone: zone_id.clone(),
        instance_type: node.instance_type.clone(),
    };
    deps.store
        .increment(
            &keys::pool_interruptions(&pool, now),
            "interruptions",
            1,
            Some(now + POOL_STATS_RETENTION),
        )
        .await?;
    let until = now + POOL_COOLDOWN;
    let cooldown = Item::new(
        keys::pool_cooldown(&pool),
        json!({ "until": rfc3339(until), "reason": signal.event_id }),
    )
    .expiring_at(until);
    deps.store.put(&cooldown, PutCondition::Always).await?;
    Ok(())
}

async fn notify(
    deps: &Deps,
    signal: &Signal,
    node: &IndexedNode,
    instance_id: &str,
    action: Option<(&AgentAction, ActionStatus)>,
    now: OffsetDateTime,
) -> Result<(), InterruptionError> {
    let severity = match signal.kind {
        SignalKind::SpotInterruption | SignalKind::CapacityReservationInterruption => {
            Severity::Warning
        }
        _ if matches!(action, Some((_, ActionStatus::Undeliverable))) => Severity::Warning,
        _ => Severity::Info,
    };
    let what = match action {
        Some((a, ActionStatus::Queued)) => format!(
            "Spotwise is {}ing the node (action {}).",
            a.kind(),
            a.action_id
        ),
        Some((a, _)) => format!(
            "Action {} could not be queued: the cluster has no agent installed.",
            a.action_id
        ),
        None => "No action was taken (policy: notify).".to_owned(),
    };
    let notification = Notification {
        tenant_id: node.tenant_id.clone(),
        event_type: "interruption".into(),
        severity,
        cluster_id: Some(node.cluster_id.clone()),
        labels: BTreeMap::from([
            ("signal".to_owned(), kind_label(signal.kind).to_owned()),
            ("instance_type".to_owned(), node.instance_type.clone()),
            ("zone".to_owned(), node.zone.clone()),
        ]),
        title: format!("{} on {}", kind_label(signal.kind), node.name),
        body: format!(
            "{instance_id} ({}, {}). {what}",
            node.instance_type, node.zone
        ),
        links: vec![],
        occurred_at: signal.event_time.filter(|t| *t <= now).unwrap_or(now),
        dedup_key: format!("interruption#{instance_id}#{}", kind_label(signal.kind)),
    };
    deps.notifications.send(&notification, None).await?;
    Ok(())
}

/// Best-effort daily counter; a failed count never fails the event.
async fn count(deps: &Deps, what: &str, now: OffsetDateTime) {
    let key: Key = keys::daily_stats("interruption", now);
    if let Err(err) = deps
        .store
        .increment(&key, what, 1, Some(now + STATS_RETENTION))
        .await
    {
        warn!(counter = what, error = %err, "could not update counter");
    }
}

fn kind_label(kind: SignalKind) -> &'static str {
    match kind {
        SignalKind::SpotInterruption => "spot interruption warning",
        SignalKind::CapacityReservationInterruption => "capacity reservation interruption",
        SignalKind::RebalanceRecommendation => "rebalance recommendation",
        SignalKind::ScheduledChange => "scheduled maintenance",
        SignalKind::StateChange => "instance state change",
        SignalKind::AsgTermination => "auto scaling termination",
    }
}

/// `us-east-1b` -> `us-east-1`; also handles local zones (`us-west-2-lax-1a` -> `us-west-2`).
fn region_of_zone(zone: &str) -> &str {
    let mut dashes = 0;
    for (i, c) in zone.char_indices() {
        if c == '-' {
            dashes += 1;
        }
        if dashes == 2 && c.is_ascii_digit() {
            let end = zone[i..]
                .find(|ch: char| !ch.is_ascii_digit())
                .map_or(zone.len(), |n| i + n);
            return &zone[..end];
        }
    }
    zone
}

#[cfg(test)]
mod tests;
