//! Interruption handler. EventBridge rules (and Auto Scaling hooks) feed one SQS queue; for each
//! message this function:
//!
//! 1. parses it into a [`Signal`] (or ignores it with a reason; malformed messages fail alone
//!    and reach the DLQ after the queue's receive limit);
//! 2. deduplicates by event id, so redeliveries do nothing;
//! 3. maps each instance to its node through the location discovery keeps (one GetItem;
//!    unknown instances are counted and dropped, never retried), and drops it unless the event's account is the one the
//!    instance's cluster runs in;
//! 4. applies the signal to the instance's record (see `signals`): one action per instance
//!    whatever mix and order of signals arrive, merged when a later one adds a lifecycle hook
//!    or an earlier deadline; nothing for an instance already departed; a closed AWS Health
//!    event withdraws the drain only it asked for;
//! 5. signs the agent action and puts it on the cluster's queue, records it, counts the
//!    interruption on its pool (the cross-tenant risk signal the optimizer reads), and notifies.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future::try_join_all;
use serde_json::json;
pub use signals::{Decision, InFlight, InstanceSignals, Wanted};
use spotwise_aws::queue::QueueError;
use spotwise_aws::{Queue, Vault};
use spotwise_core::action::{
    ActionKind, ActionRecord, ActionSpec, ActionStatus, AgentAction, DrainTerms, INTERRUPTION_TAINT,
};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{
    InstanceLocation, Node, Notification, Policy, PoolKey, RebalanceResponse, Severity, Taint,
};
use spotwise_core::interruption::{self, ParseError, Parsed, Signal, SignalKind};
use spotwise_core::{Classify, ClusterId, Disposition, rfc3339};
use spotwise_lambda::sqs::{BodyError, process_batch_by};
use spotwise_store::actions::{self, AgentChannel, DispatchError};
use spotwise_store::keys::{self, Key};
use spotwise_store::{Item, PutCondition, Query};
use spotwise_store::{Store, StoreError};
use time::OffsetDateTime;
use tracing::{info, warn};

mod replacement;
mod signals;

/// Redeliveries of one event arrive within minutes; a day is ample.
const EVENT_DEDUP_HOLD: Duration = Duration::from_secs(24 * 3600);
/// An instance's signal record outlives late deliveries (a standard queue may hold a message
/// for hours) and is refreshed by every signal.
const SIGNALS_RETENTION: time::Duration = time::Duration::hours(24);
/// Writes of one instance's record that lose a race are retried this often.
const STATE_ATTEMPTS: usize = 4;
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
    /// The customers' roles, for replacement capacity in Spotwise's spot node groups.
    pub accounts: spotwise_aws::cross_account::CrossAccount,
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
            accounts: spotwise_aws::cross_account::CrossAccount::new(
                sdk.clone(),
                "spotwise-interruption",
            ),
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

/// What happened to one instance of a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    /// An action was issued (and queued when the cluster has an agent).
    Issued {
        action_id: String,
        kind: ActionKind,
        status: ActionStatus,
    },
    /// The action in flight for this instance already does what the signal asks; the signal is
    /// recorded against it.
    AlreadyHandled,
    /// What the signal adds was merged into the action in flight.
    Amended {
        action_id: String,
    },
    /// The instance departed before this signal: nothing issued.
    AlreadyDeparted,
    /// A closed AWS Health event withdrew the actions only it asked for.
    Withdrawn {
        cancelled: usize,
    },
    /// A closed AWS Health event with nothing of its own to withdraw.
    NothingToWithdraw,
    /// The event's account does not run this instance (another tenant's, or unlinked).
    ForeignAccount,
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

/// Signals about one instance in a batch (a spot warning and its Auto Scaling hook often come
/// together) are handled in order, so the second merges into the first's action instead of
/// racing it for the instance's record.
pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(
        process_batch_by(event, CONCURRENCY, first_instance, |message| {
            handle_message(deps, message)
        })
        .await,
    )
}

fn first_instance(message: &SqsMessage) -> Option<String> {
    match interruption::parse(message.body.as_deref()?) {
        Ok(Parsed::Signal(signal)) => signal.instance_ids.into_iter().next(),
        _ => None,
    }
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
) -> Result<Option<InstanceLocation>, InterruptionError> {
    Ok(deps
        .store
        .get::<InstanceLocation>(&keys::instance(instance_id))
        .await?
        .map(|item| item.body))
}

async fn handle_instance(
    deps: &Deps,
    signal: &Signal,
    instance_id: &str,
    node: Option<InstanceLocation>,
    now: OffsetDateTime,
) -> Result<InstanceOutcome, InterruptionError> {
    let Some(node) = node else {
        warn!(event_id = %signal.event_id, %instance_id, kind = ?signal.kind, "unknown instance dropped");
        count(deps, "unknown_instances", now).await;
        return Ok(InstanceOutcome::UnknownInstance);
    };
    let key = keys::instance_signals(&node.tenant_id, &node.cluster_id, instance_id);
    let (cluster, stored, wanted) = tokio::join!(
        actions::cluster_channel(&deps.store, &deps.vault, &node.tenant_id, &node.cluster_id),
        deps.store.get::<InstanceSignals>(&key),
        wanted(deps, signal, instance_id, &node, now),
    );
    let (cluster, channel) = cluster?;
    // The bus admits only linked accounts; this ties the event to the tenant that linked the
    // account the instance runs in, so one tenant's account cannot act on another's nodes.
    if cluster.as_ref().map(|c| c.account_id.as_str()) != Some(signal.account.as_str()) {
        warn!(event_id = %signal.event_id, %instance_id, account = %signal.account, tenant = %node.tenant_id,
              cluster = %node.cluster_id, "event from an account that does not run this instance dropped");
        count(deps, "foreign_account_events", now).await;
        return Ok(InstanceOutcome::ForeignAccount);
    }
    let (item, decision, count_pool) =
        decide(deps, key, stored?, &node, signal, wanted?, now).await?;
    let subject = Subject {
        signal,
        node: &node,
        instance_id,
    };
    if count_pool && !matches!(decision, Decision::Issue { .. }) {
        record_pool_interruption(deps, signal, &node, now).await?;
    }
    match decision {
        Decision::Issue { supersedes, .. } => {
            // The replacement is asked for while the drain goes out, not after it.
            let (issued, ()) = tokio::join!(
                issue(deps, subject, supersedes, item, channel, count_pool, now),
                replacement::raise(deps, signal, &node, instance_id, cluster.as_ref(), now),
            );
            issued
        }
        Decision::Amend { action_id, wanted } => {
            if amend(deps, &node, &action_id, &wanted, now).await? {
                info!(event_id = %signal.event_id, %instance_id, %action_id, deadline = %rfc3339(wanted.not_after),
                      lifecycle_hook = wanted.lifecycle_hook.is_some(), "merged into the action in flight");
                count(deps, "amended_actions", now).await;
                return Ok(InstanceOutcome::Amended { action_id });
            }
            // It finished (or was closed) before this signal arrived: a new action carries it.
            let mut item = item;
            let fresh = AgentAction::new_id();
            item.body.issued(fresh, &wanted, signal, now);
            let item = save(deps, item, now).await?;
            // Its pool, if it counts, was counted above.
            issue(deps, subject, Some(action_id), item, channel, false, now).await
        }
        Decision::AlreadyHandled { action_id } => {
            info!(event_id = %signal.event_id, %instance_id, %action_id, "merged into the action in flight");
            count(deps, "deduplicated_actions", now).await;
            Ok(InstanceOutcome::AlreadyHandled)
        }
        Decision::AlreadyDeparted => {
            info!(event_id = %signal.event_id, %instance_id, kind = ?signal.kind, "signal for a departed instance; nothing issued");
            count(deps, "late_signals", now).await;
            Ok(InstanceOutcome::AlreadyDeparted)
        }
        Decision::Depart => {
            let (departed, ()) = tokio::join!(
                depart(deps, signal, &node, now),
                replacement::release(deps, &node, instance_id, cluster.as_ref(), now),
            );
            departed
        }
        Decision::Withdraw { action_ids } => {
            let cancelled = withdraw(deps, signal, &node, &action_ids, now).await?;
            if cancelled > 0 {
                notify(deps, signal, &node, instance_id, Notice::Withdrawn, now).await?;
            }
            Ok(InstanceOutcome::Withdrawn { cancelled })
        }
        Decision::NothingToWithdraw => Ok(InstanceOutcome::NothingToWithdraw),
        Decision::NotifyOnly => {
            notify(
                deps,
                signal,
                &node,
                instance_id,
                Notice::PolicyNotifyOnly,
                now,
            )
            .await?;
            Ok(InstanceOutcome::NotifiedOnly)
        }
    }
}

/// What this signal alone asks of the node; `None` for departures, withdrawals and a policy
/// that says notify only.
async fn wanted(
    deps: &Deps,
    signal: &Signal,
    instance_id: &str,
    node: &InstanceLocation,
    now: OffsetDateTime,
) -> Result<Option<Wanted>, InterruptionError> {
    let kind = match signal.kind {
        SignalKind::StateChange => return Ok(None),
        _ if signal.withdraws() => return Ok(None),
        SignalKind::RebalanceRecommendation => match rebalance_policy(deps, node).await? {
            RebalanceResponse::Cordon => ActionKind::Cordon,
            RebalanceResponse::Drain => ActionKind::Drain,
            RebalanceResponse::Notify => return Ok(None),
        },
        _ => ActionKind::Drain,
    };
    Ok(Some(Wanted {
        kind,
        not_after: interruption::action_deadline(signal, now),
        lifecycle_hook: signal.lifecycle.as_ref().map(|l| l.hook_for(instance_id)),
    }))
}

/// Applies the signal to the instance's record under the optimistic lock and stores it, so
/// concurrent signals for one instance (one batch, or two invocations) see each other. An
/// action to issue is written into the record, under a fresh id, before it is sent.
async fn decide(
    deps: &Deps,
    key: Key,
    mut stored: Option<Item<InstanceSignals>>,
    node: &InstanceLocation,
    signal: &Signal,
    wanted: Option<Wanted>,
    now: OffsetDateTime,
) -> Result<(Item<InstanceSignals>, Decision, bool), InterruptionError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut item = stored.take().unwrap_or_else(|| {
            let mut fresh = Item::new(
                key.clone(),
                InstanceSignals::new(
                    node.tenant_id.clone(),
                    node.cluster_id.clone(),
                    node.node_name.clone(),
                ),
            );
            fresh.version = 0;
            fresh
        });
        let decision = item.body.apply(signal, wanted.clone(), now);
        if let Decision::Issue { wanted, .. } = &decision {
            let action_id = AgentAction::new_id();
            item.body.issued(action_id, wanted, signal, now);
        }
        // Once per instance, whatever the decision: a warning that arrives after the instance
        // departed still records an interruption that happened, but never a second time.
        let count_pool = item.body.count_on_pool(signal);
        match save(deps, item, now).await {
            Ok(item) => return Ok((item, decision, count_pool)),
            Err(InterruptionError::Store(
                StoreError::StaleVersion { .. } | StoreError::AlreadyExists { .. },
            )) if attempt < STATE_ATTEMPTS => {
                stored = deps.store.get::<InstanceSignals>(&key).await?;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes the record: created when new, else at its next version. Returns it as stored.
async fn save(
    deps: &Deps,
    mut item: Item<InstanceSignals>,
    now: OffsetDateTime,
) -> Result<Item<InstanceSignals>, InterruptionError> {
    item = item.expiring_at(now + SIGNALS_RETENTION);
    if item.version == 0 {
        item.version = 1;
        deps.store.put(&item, PutCondition::IfAbsent).await?;
    } else {
        item.version = deps.store.update_versioned(&item).await?;
    }
    Ok(item)
}

/// The instance a signal is about, and where it runs.
#[derive(Clone, Copy)]
struct Subject<'a> {
    signal: &'a Signal,
    node: &'a InstanceLocation,
    instance_id: &'a str,
}

/// Sends the signed action (the time-critical part), then records, counts and notifies
/// concurrently. When the send fails the record forgets the action, so the event's redelivery
/// issues it again.
async fn issue(
    deps: &Deps,
    subject: Subject<'_>,
    supersedes: Option<String>,
    mut item: Item<InstanceSignals>,
    channel: Option<AgentChannel>,
    count_pool: bool,
    now: OffsetDateTime,
) -> Result<InstanceOutcome, InterruptionError> {
    let Subject {
        signal,
        node,
        instance_id,
    } = subject;
    let Some(in_flight) = item.body.action.clone() else {
        return Ok(InstanceOutcome::AlreadyHandled);
    };
    let action = build_action(
        signal,
        &node.cluster_id,
        &node.node_name,
        instance_id,
        &in_flight,
        now,
    );
    let delivered = match actions::deliver(&deps.sqs, channel.as_ref(), action).await {
        Ok(delivered) => delivered,
        Err(err) => {
            item.body.action = None;
            item.body.pool_counted &= !count_pool;
            if let Err(forget) = save(deps, item, now).await {
                warn!(%instance_id, error = %forget, "could not take back an unsent action");
            }
            return Err(err.into());
        }
    };
    let source = match &supersedes {
        Some(previous) => format!("interruption:{} (supersedes {previous})", signal.event_id),
        None => format!("interruption:{}", signal.event_id),
    };
    let record = actions::record_item(
        &node.tenant_id,
        delivered,
        source,
        Some(instance_id.to_owned()),
        now,
    );
    let (action, status) = (&record.body.action, record.body.status);
    let kind = action.kind();
    let pool = async {
        if count_pool {
            record_pool_interruption(deps, signal, node, now).await
        } else {
            Ok(())
        }
    };
    let (recorded, notified, pooled, ()) = tokio::join!(
        deps.store.put(&record, PutCondition::IfAbsent),
        notify(
            deps,
            signal,
            node,
            instance_id,
            Notice::Issued(action, status),
            now
        ),
        pool,
        count(deps, "actions", now),
    );
    recorded?;
    notified?;
    pooled?;
    info!(event_id = %signal.event_id, %instance_id, tenant = %node.tenant_id, cluster = %node.cluster_id,
          node = %node.node_name, action_id = %action.action_id, %kind, ?status, deadline = %rfc3339(action.not_after),
          supersedes = ?supersedes, "action issued");
    Ok(InstanceOutcome::Issued {
        action_id: action.action_id.clone(),
        kind,
        status,
    })
}

/// Amends the queued action `action_id` with what `wanted` adds to it. `false` when the action
/// is no longer queued (the agent reported it, or it was closed): it cannot be amended.
async fn amend(
    deps: &Deps,
    node: &InstanceLocation,
    action_id: &str,
    wanted: &Wanted,
    now: OffsetDateTime,
) -> Result<bool, InterruptionError> {
    let key = keys::action(&node.tenant_id, action_id);
    for _ in 0..STATE_ATTEMPTS {
        let Some(mut record) = deps.store.get::<ActionRecord>(&key).await? else {
            return Ok(false);
        };
        if record.body.status != ActionStatus::Queued {
            return Ok(false);
        }
        let signed = DrainTerms::of(&record.body.action);
        let mut amendment = record.body.amendment.take().unwrap_or_default();
        if wanted.not_after < signed.not_after {
            amendment.not_after = Some(
                amendment
                    .not_after
                    .map_or(wanted.not_after, |at| at.min(wanted.not_after)),
            );
        }
        if signed.lifecycle_hook.is_none() && amendment.lifecycle_hook.is_none() {
            amendment.lifecycle_hook = wanted.lifecycle_hook.clone();
        }
        record.body.amendment = Some(amendment);
        record.body.updated_at = now;
        match deps.store.update_versioned(&record).await {
            Ok(_) => return Ok(true),
            Err(StoreError::StaleVersion { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Ok(false)
}

/// The unsigned agent action the record holds in flight: the handler's pure work.
pub fn build_action(
    signal: &Signal,
    cluster_id: &ClusterId,
    node_name: &str,
    instance_id: &str,
    in_flight: &InFlight,
    now: OffsetDateTime,
) -> AgentAction {
    let node = node_name.to_owned();
    let spec = match in_flight.kind {
        ActionKind::Cordon => ActionSpec::Cordon { node },
        _ => ActionSpec::Drain {
            node,
            taint: Some(Taint {
                key: INTERRUPTION_TAINT.into(),
                value: Some(signal.kind.as_str().into()),
                effect: "NoSchedule".into(),
            }),
            lifecycle_hook: in_flight.lifecycle_hook.clone(),
        },
    };
    let because: Vec<&str> = in_flight.because.iter().map(|k| kind_label(*k)).collect();
    AgentAction {
        action_id: in_flight.action_id.clone(),
        cluster_id: cluster_id.clone(),
        spec,
        reason: format!("{} for {instance_id}", because.join(" + ")),
        issued_at: now,
        not_after: in_flight.not_after,
        signature: String::new(),
    }
}

/// The instance is stopping or gone: keep the node record (history) but mark it, and close the
/// actions that can no longer happen.
async fn depart(
    deps: &Deps,
    signal: &Signal,
    node: &InstanceLocation,
    now: OffsetDateTime,
) -> Result<InstanceOutcome, InterruptionError> {
    let node_key = keys::node(&node.tenant_id, &node.cluster_id, &node.node_name);
    for _ in 0..STATE_ATTEMPTS {
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
    let reason = format!("instance {}", signal.state.as_deref().unwrap_or("gone"));
    let closed_actions = actions::withdraw_open(
        &deps.store,
        node_actions(deps, node).await?,
        ActionStatus::Closed,
        &reason,
        now,
    )
    .await?;
    info!(event_id = %signal.event_id, node = %node.node_name, state = ?signal.state, closed_actions, "node departed");
    Ok(InstanceOutcome::Departed { closed_actions })
}

async fn node_actions(
    deps: &Deps,
    node: &InstanceLocation,
) -> Result<Vec<Item<ActionRecord>>, InterruptionError> {
    Ok(deps
        .store
        .query_all::<ActionRecord>(&Query::gsi1(keys::node_actions_partition(
            &node.tenant_id,
            &node.cluster_id,
            &node.node_name,
        )))
        .await?)
}

/// Cancels the actions a closed AWS Health event alone asked for, among those the agent has not
/// started; the agent checks an action's status before it runs it, and skips a cancelled one.
async fn withdraw(
    deps: &Deps,
    signal: &Signal,
    node: &InstanceLocation,
    action_ids: &[String],
    now: OffsetDateTime,
) -> Result<usize, InterruptionError> {
    let records: Vec<Item<ActionRecord>> = node_actions(deps, node)
        .await?
        .into_iter()
        .filter(|r| action_ids.contains(&r.body.action.action_id))
        .collect();
    let arn = signal.health.as_ref().map_or("", |h| h.event_arn.as_str());
    let reason = format!("AWS Health event {arn} closed");
    let cancelled =
        actions::withdraw_open(&deps.store, records, ActionStatus::Cancelled, &reason, now).await?;
    info!(event_id = %signal.event_id, node = %node.node_name, cancelled, "scheduled change closed; its drain withdrawn");
    Ok(cancelled)
}

async fn rebalance_policy(
    deps: &Deps,
    node: &InstanceLocation,
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
    node: &InstanceLocation,
    now: OffsetDateTime,
) -> Result<(), InterruptionError> {
    let Some(zone_id) = &node.zone_id else {
        warn!(node = %node.node_name, zone = %node.zone, "node has no zone id; interruption not counted on its pool");
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
    // A late warning counts on the day it happened and cools the pool only for what is left
    // of the cooldown; a clock in the future, or implausibly far back, counts as now.
    let happened = signal
        .event_time
        .filter(|t| *t <= now && now - *t <= SIGNALS_RETENTION)
        .unwrap_or(now);
    deps.store
        .increment(
            &keys::pool_interruptions(&pool, happened),
            "interruptions",
            1,
            Some(happened + POOL_STATS_RETENTION),
        )
        .await?;
    let until = happened + POOL_COOLDOWN;
    if until <= now {
        return Ok(());
    }
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
    node: &InstanceLocation,
    instance_id: &str,
    notice: Notice<'_>,
    now: OffsetDateTime,
) -> Result<(), InterruptionError> {
    let severity = match (signal.kind, &notice) {
        (SignalKind::SpotInterruption | SignalKind::CapacityReservationInterruption, _)
        | (_, Notice::Issued(_, ActionStatus::Undeliverable)) => Severity::Warning,
        _ => Severity::Info,
    };
    let what = match notice {
        Notice::Issued(a, ActionStatus::Queued) => format!(
            "Spotwise is {}ing the node (action {}).",
            a.kind(),
            a.action_id
        ),
        Notice::Issued(a, _) => format!(
            "Action {} could not be queued: the cluster has no agent installed.",
            a.action_id
        ),
        Notice::PolicyNotifyOnly => "No action was taken (policy: notify).".to_owned(),
        Notice::Withdrawn => {
            "AWS closed the scheduled change; the drain it asked for is withdrawn.".to_owned()
        }
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
        title: format!("{} on {}", kind_label(signal.kind), node.node_name),
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

/// What a notification tells the tenant was done.
enum Notice<'a> {
    Issued(&'a AgentAction, ActionStatus),
    PolicyNotifyOnly,
    Withdrawn,
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
