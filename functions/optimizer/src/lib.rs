//! Optimizer function: one SQS message per cluster to plan. The hourly schedule fans out one
//! message per cluster whose snapshot is fresh; the API sends one on demand.
//!
//! It loads the cluster's policy, its latest agent snapshot and the region's pools, plans with
//! the engine, then re-plans once with the observed interruptions and cooldowns of the spot
//! pools the first plan chose (reading every pool's history up front would cost a query per
//! pool). The plan is stored as the cluster's next recommendation revision. In `auto` mode the
//! first consolidation wave is sent to the agent as signed drain actions. Requests for unknown
//! clusters, or clusters without a complete snapshot, are dropped and logged, never retried.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use serde::{Deserialize, Serialize};
use spotwise_aws::Bucket;
use spotwise_aws::queue::{Queue, QueueError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{
    Cluster, NodeTemplate, Notification, Policy, PolicyMode, PoolKey, Severity,
};
use spotwise_core::messages::{OptimizeRequest, ScheduleTrigger};
use spotwise_core::rightsizing::RightSizingMode;
use spotwise_core::snapshot::Snapshot;
use spotwise_core::{Classify, Disposition};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch};
use spotwise_optimizer::catalog::TypeFilter;
use spotwise_optimizer::consolidation::Step;
use spotwise_optimizer::eligibility::SpotPolicy;
use spotwise_optimizer::kube;
use spotwise_optimizer::model::{Offering, PlanPolicy};
use spotwise_optimizer::recommendation::{Recommendation, RecommendationStatus, node_mix};
use spotwise_optimizer::resize::{ResizeChange, ResizeState};
use spotwise_optimizer::rightsizing::{self, WorkloadRightSizing, WorkloadStatus};
use spotwise_optimizer::{Plan, plan};
use spotwise_store::keys;
use spotwise_store::rollouts;
use spotwise_store::runs;
use spotwise_store::snapshots::{self, Unusable};
use spotwise_store::{Item, PutCondition, Query};
use spotwise_store::{Store, StoreError};
use spotwise_store::{recommendations, resize};
use time::OffsetDateTime;
use tracing::{info, warn};

/// Clusters are planned independently; a few at a time keeps memory bounded.
const CONCURRENCY: usize = 2;
/// Interruptions count against a pool over this many days.
const OBSERVED_DAYS: i64 = 30;
/// Stored lists are capped so a recommendation stays one item.
const STORED_LIST_CAP: usize = 200;
/// `auto` mode rolls a new node mix out when it saves at least this share of the current cost,
/// so a plan that differs by a node or two does not churn the cluster every hour.
const AUTO_MIN_SAVING: f64 = 0.05;
/// `auto` mode asks for at most this many right-sizing changes per run, so a cluster's
/// workloads roll one few at a time, each watched.
const AUTO_RESIZES_PER_RUN: usize = 3;

pub struct Config {
    pub common: CommonConfig,
    pub optimize_queue_url: String,
    pub notifications_queue_url: String,
    /// The bucket cluster snapshots are read from.
    pub snapshot_bucket: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            optimize_queue_url: env.required("OPTIMIZE_QUEUE_URL")?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            snapshot_bucket: env.required("SNAPSHOT_BUCKET")?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub sqs: aws_sdk_sqs::Client,
    pub optimize_queue: Queue,
    pub notifications: Queue,
    pub snapshots: Bucket,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            optimize_queue: Queue::new(sqs.clone(), &config.optimize_queue_url),
            notifications: Queue::new(sqs.clone(), &config.notifications_queue_url),
            snapshots: Bucket::new(sdk, &config.snapshot_bucket),
            sqs,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

impl Classify for OptimizeError {
    fn disposition(&self) -> Disposition {
        match self {
            OptimizeError::Body(e) => e.disposition(),
            OptimizeError::Store(e) => e.disposition(),
            OptimizeError::Queue(e) => e.disposition(),
        }
    }
}

/// Why a cluster was not planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    UnknownCluster,
    Snapshot(Unusable),
    NoPools {
        region: String,
    },
    /// The cluster's node templates leave no priced offering open.
    NoTemplateOfferings,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::UnknownCluster => f.write_str("the cluster is unknown"),
            Skipped::Snapshot(unusable) => unusable.fmt(f),
            Skipped::NoPools { region } => write!(f, "no priced pools for region {region}"),
            Skipped::NoTemplateOfferings => {
                f.write_str("the node templates leave no priced offering open")
            }
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Planned {
        revision: u64,
        monthly_cost: f64,
        monthly_savings: Option<f64>,
        /// The revision `auto` mode rolled out.
        rollout: Option<u64>,
    },
    Skipped(Skipped),
}

/// The function's two triggers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OptimizerEvent {
    /// Per-cluster requests from the optimize queue.
    Requests(SqsEvent),
    /// The schedule.
    Schedule(ScheduleTrigger),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OptimizerResponse {
    Batch(SqsBatchResponse),
    FanOut(FanOut),
}

pub async fn handle(
    deps: &Deps,
    event: OptimizerEvent,
) -> Result<OptimizerResponse, OptimizeError> {
    match event {
        OptimizerEvent::Requests(batch) => {
            let Ok(response) = handle_batch(deps, batch).await;
            Ok(OptimizerResponse::Batch(response))
        }
        OptimizerEvent::Schedule(trigger) => {
            let now = OffsetDateTime::now_utc();
            fan_out(deps, &trigger, now)
                .await
                .map(OptimizerResponse::FanOut)
        }
    }
}

/// What one scheduled fan-out did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FanOut {
    pub clusters: usize,
    /// Clusters whose agent has not reported within the snapshot age limit.
    pub stale: usize,
    pub enqueued: usize,
}

/// One optimize request per cluster with a fresh snapshot; clusters whose agent went quiet are
/// counted, not planned (their plan would describe a cluster that may no longer exist).
pub async fn fan_out(
    deps: &Deps,
    trigger: &ScheduleTrigger,
    now: OffsetDateTime,
) -> Result<FanOut, OptimizeError> {
    let clusters =
        snapshots::snapshotted_clusters(&deps.store, now, snapshots::MAX_USABLE_AGE).await?;
    let requests: Vec<OptimizeRequest> = clusters
        .fresh
        .into_iter()
        .map(|(tenant_id, cluster_id)| OptimizeRequest {
            tenant_id,
            cluster_id,
            trigger: "schedule".into(),
            scheduled: None,
        })
        .collect();
    let enqueued = deps.optimize_queue.send_all(&requests).await?;
    let fan_out = FanOut {
        clusters: requests.len() + clusters.stale,
        stale: clusters.stale,
        enqueued,
    };
    info!(clusters = fan_out.clusters, stale = fan_out.stale, enqueued, scheduled_at = ?trigger.time, "optimizer fan-out");
    Ok(fan_out)
}

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, CONCURRENCY, |message| handle_message(deps, message)).await)
}

async fn handle_message(deps: &Deps, message: SqsMessage) -> Result<(), OptimizeError> {
    let request: OptimizeRequest = parse_body(&message, "optimize request")?;
    let result = optimize(deps, &request, OffsetDateTime::now_utc()).await;
    let outcome = runs::outcome_of(&result, |outcome| match outcome {
        Outcome::Planned {
            revision,
            monthly_cost,
            rollout,
            ..
        } => Ok(format!(
            "recommendation revision {revision}: ${monthly_cost:.2} a month{}",
            if rollout.is_some() {
                ", rolling out"
            } else {
                ""
            }
        )),
        Outcome::Skipped(why) => Err(format!("not planned: {why}")),
    });
    runs::report(
        &deps.store,
        &deps.notifications,
        request.scheduled.as_ref(),
        outcome,
    )
    .await;
    result.map(|_| ())
}

pub fn plan_policy(policy: &Policy) -> (PlanPolicy, SpotPolicy) {
    (
        PlanPolicy {
            max_interruption_band: policy.max_interruption_band,
            min_spot_pools: policy.min_spot_pools,
            max_disrupted_nodes: policy.max_disrupted_nodes,
            exclude_burstable: policy.exclude_burstable,
            exclude_previous_generation: policy.exclude_previous_generation,
            ..PlanPolicy::default()
        },
        SpotPolicy {
            excluded_namespaces: policy.excluded_namespaces.clone(),
            on_demand_base_pct: policy.on_demand_base_pct,
            ..SpotPolicy::default()
        },
    )
}

pub async fn optimize(
    deps: &Deps,
    request: &OptimizeRequest,
    now: OffsetDateTime,
) -> Result<Outcome, OptimizeError> {
    let (tenant, cluster_id) = (&request.tenant_id, &request.cluster_id);
    let skip = |why: Skipped| {
        warn!(%tenant, cluster = %cluster_id, reason = ?why, "cluster not planned");
        Ok(Outcome::Skipped(why))
    };
    let cluster_key = keys::cluster(tenant, cluster_id);
    let policy_key = keys::policy(tenant, cluster_id);
    let (cluster, policy) = tokio::join!(
        deps.store.get::<Cluster>(&cluster_key),
        deps.store.get::<Policy>(&policy_key),
    );
    let Some(cluster) = cluster? else {
        return skip(Skipped::UnknownCluster);
    };
    let policy = policy?.map(|p| p.body).unwrap_or_default();
    let loaded = snapshots::load(
        &deps.store,
        &deps.snapshots,
        tenant,
        cluster_id,
        now,
        snapshots::MAX_USABLE_AGE,
    )
    .await?;
    let (head, snapshot) = match loaded {
        Ok(loaded) => loaded,
        Err(why) => return skip(Skipped::Snapshot(why)),
    };
    let region = snapshot
        .region
        .clone()
        .unwrap_or_else(|| cluster.body.region.clone());
    let filter = TypeFilter {
        architectures: snapshot.architectures(),
        ..TypeFilter::default()
    };
    let priced =
        snapshots::region_offerings(&deps.store, tenant, cluster_id, &snapshot, &region, &filter)
            .await?;
    if priced.pools == 0 {
        return skip(Skipped::NoPools { region });
    }
    let templates: Vec<NodeTemplate> = deps
        .store
        .query_all::<NodeTemplate>(
            &Query::partition(keys::tenant_partition(tenant))
                .prefix(keys::node_templates_prefix(cluster_id)),
        )
        .await?
        .into_iter()
        .map(|t| t.body)
        .collect();
    let zone_names = priced.zone_names;
    let mut offerings = spotwise_optimizer::template::apply(&templates, priced.offerings);
    if offerings.is_empty() {
        return skip(Skipped::NoTemplateOfferings);
    }
    let (plan_policy, spot_policy) = plan_policy(&policy);
    let (workloads, resize_state) = Box::pin(right_size(
        deps,
        request,
        &policy,
        &plan_policy,
        &snapshot,
        now,
    ))
    .await?;
    let right_sized = rightsizing::pod_changes(&snapshot, &workloads);
    let (mut input, _) = kube::to_plan_input(
        &snapshot,
        offerings.clone(),
        plan_policy.clone(),
        &spot_policy,
    );
    input.right_sized.clone_from(&right_sized);
    let first = plan(&input);

    // Second pass with what the interruption handler observed on the chosen spot pools.
    let chosen: HashSet<(String, String)> = first
        .nodes
        .iter()
        .filter(|n| n.capacity_type == "spot")
        .map(|n| (n.instance_type.clone(), n.zone.clone()))
        .collect();
    let zone_ids: BTreeMap<&str, &str> = zone_names
        .iter()
        .map(|(id, name)| (name.as_str(), id.as_str()))
        .collect();
    let risk = observed_risk(deps, &region, &chosen, &zone_ids, now).await?;
    let pools_in_cooldown: Vec<String> = risk
        .iter()
        .filter(|(_, r)| r.cooling_down)
        .map(|((t, z), _)| format!("{t}/{z}"))
        .collect();
    let mut final_plan = if risk.is_empty() {
        first
    } else {
        apply_risk(&mut offerings, &risk);
        let (mut input, _) = kube::to_plan_input(&snapshot, offerings, plan_policy, &spot_policy);
        input.right_sized = right_sized;
        plan(&input)
    };
    let requested = final_plan.nodes.iter().fold((0, 0), |(cpu, mem), n| {
        (cpu + n.cpu_m_requested, mem + n.mem_mib_requested)
    });
    rightsizing::attach(&mut final_plan, workloads, requested);

    let (record, mix_changed) = store_recommendation(
        deps,
        request,
        &policy,
        &head,
        final_plan,
        pools_in_cooldown,
        now,
    )
    .await?;
    if mix_changed && record.summary.monthly_savings.is_some_and(|s| s > 0.0) {
        announce(deps, &record).await;
    }
    let resized = Box::pin(resize_automatically(
        deps,
        &record,
        &policy,
        &resize_state,
        &snapshot,
        now,
    ))
    .await?;
    let rollout = if policy.mode == PolicyMode::Auto {
        Box::pin(realise(deps, &record, &region, &policy, mix_changed, now)).await?
    } else {
        None
    };
    info!(%tenant, cluster = %cluster_id, revision = record.revision, nodes = record.summary.nodes,
          monthly_cost = record.summary.monthly_cost, monthly_savings = ?record.summary.monthly_savings,
          rollout = ?rollout, resized, "cluster planned");
    Ok(Outcome::Planned {
        revision: record.revision,
        monthly_cost: record.summary.monthly_cost,
        monthly_savings: record.summary.monthly_savings,
        rollout,
    })
}

/// Folds the snapshot's new hours of usage into the cluster's history (saved when it
/// changed) and sizes its workloads from it.
async fn right_size(
    deps: &Deps,
    request: &OptimizeRequest,
    policy: &Policy,
    plan_policy: &PlanPolicy,
    snapshot: &Snapshot,
    now: OffsetDateTime,
) -> Result<(Vec<WorkloadRightSizing>, ResizeState), OptimizeError> {
    let (tenant, cluster) = (&request.tenant_id, &request.cluster_id);
    let (history, state) = tokio::join!(
        resize::history(&deps.snapshots, tenant, cluster),
        resize::state(&deps.store, tenant, cluster),
    );
    let (mut history, (state, _)) = (history?, state?);
    let folded = history.fold(&snapshot.usage_hours);
    let pruned = history.prune(now.unix_timestamp());
    if folded > 0 || pruned {
        resize::save_history(&deps.snapshots, tenant, cluster, &history).await?;
    }
    let workloads = rightsizing::recommend_workloads(
        snapshot,
        &history,
        &policy.right_sizing,
        &plan_policy.right_sizing,
        &state.extra_mem_headroom(),
    );
    Ok((workloads, state))
}

/// `auto` mode: asks for the ready changes of workloads in `auto` mode that have no change in
/// progress and none in the last week, the largest saving first, a few per run. The scheduler
/// applies and watches them. Returns how many it asked for.
async fn resize_automatically(
    deps: &Deps,
    record: &Recommendation,
    policy: &Policy,
    state: &ResizeState,
    snapshot: &Snapshot,
    now: OffsetDateTime,
) -> Result<usize, OptimizeError> {
    let Some(right_sizing) = &record.right_sizing else {
        return Ok(0);
    };
    let mut due: Vec<&WorkloadRightSizing> = right_sizing
        .workloads
        .iter()
        .filter(|w| {
            w.status == WorkloadStatus::Ready
                && w.mode == RightSizingMode::Auto
                && state.auto_allowed(&w.key, now)
        })
        .collect();
    due.sort_by(|a, b| b.monthly_saving.total_cmp(&a.monthly_saving));
    let mut asked = 0;
    for workload in due.into_iter().take(AUTO_RESIZES_PER_RUN) {
        let change = ResizeChange::new(
            snapshots::new_id(),
            (record.tenant_id.clone(), record.cluster_id.clone()),
            workload,
            snapshot,
            resize::AUTO_ACTOR,
            policy.right_sizing.watch_minutes,
            now,
        );
        let audit = spotwise_store::audit::write_of(
            &record.tenant_id,
            resize::AUTO_ACTOR,
            spotwise_store::audit::Change {
                action: "rightsizing.request",
                target: format!("cluster/{}/workload/{}", record.cluster_id, workload.key),
                before: serde_json::to_value(change.before()).ok(),
                after: serde_json::to_value(change.after()).ok(),
            },
            now,
        )?;
        match resize::request(&deps.store, &change, audit).await {
            Ok(()) => asked += 1,
            Err(resize::RequestError::Busy { .. }) => {}
            Err(resize::RequestError::Store(err)) => return Err(err.into()),
        }
    }
    Ok(asked)
}

/// Whether `auto` mode rolls a plan out: it saves at least [`AUTO_MIN_SAVING`] of the current
/// cost.
fn worth_rolling_out(summary: &spotwise_optimizer::plan::Summary) -> bool {
    match (summary.monthly_savings, summary.current_monthly_cost) {
        (Some(saving), Some(current)) => saving > 0.0 && saving >= current * AUTO_MIN_SAVING,
        _ => false,
    }
}

/// `auto` mode: a new node mix worth rolling out is rolled out, as an approval would, unless a
/// rollout of the cluster is still going. Returns the revision rolled out.
async fn realise(
    deps: &Deps,
    record: &Recommendation,
    region: &str,
    policy: &Policy,
    mix_changed: bool,
    now: OffsetDateTime,
) -> Result<Option<u64>, OptimizeError> {
    if !mix_changed || record.status != RecommendationStatus::Applying {
        return Ok(None);
    }
    let (tenant, cluster) = (&record.tenant_id, &record.cluster_id);
    if rollouts::in_progress(&deps.store, tenant, cluster)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    match rollouts::start(&deps.store, &deps.snapshots, record, region, policy, now).await {
        Ok(_) => Ok(Some(record.revision)),
        Err(rollouts::StartError::Store(err)) => Err(err.into()),
        // The snapshot planned from went stale meanwhile: the next run plans again.
        Err(rollouts::StartError::Snapshot(why)) => {
            warn!(%tenant, %cluster, %why, "auto mode: rollout not started");
            Ok(None)
        }
        // The policy's backend cannot act on the cluster; approving says why.
        Err(rollouts::StartError::Backend(why)) => {
            warn!(%tenant, %cluster, %why, "auto mode: rollout not started");
            Ok(None)
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolRisk {
    pub interruptions: u32,
    pub cooling_down: bool,
}

#[derive(Deserialize)]
struct InterruptionCount {
    #[serde(default)]
    interruptions: i64,
}

#[derive(Deserialize)]
struct Cooldown {
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
}

/// Interruptions in the last 30 days and active cooldowns of the given (type, zone name) pools.
async fn observed_risk(
    deps: &Deps,
    region: &str,
    pools: &HashSet<(String, String)>,
    zone_ids: &BTreeMap<&str, &str>,
    now: OffsetDateTime,
) -> Result<BTreeMap<(String, String), PoolRisk>, StoreError> {
    let cutoff = keys::pool_interruptions_from(now - time::Duration::days(OBSERVED_DAYS));
    let cutoff = cutoff.as_str();
    let lookups = pools.iter().filter_map(|(itype, zone)| {
        let key = PoolKey {
            region: region.to_owned(),
            zone: (*zone_ids.get(zone.as_str())?).to_owned(),
            instance_type: itype.clone(),
        };
        Some(async move {
            let counts = deps
                .store
                .query_all::<InterruptionCount>(
                    &Query::partition(keys::pool_partition(&key))
                        .prefix(keys::prefix::POOL_INTERRUPTIONS),
                )
                .await?;
            let cooldown = deps
                .store
                .get::<Cooldown>(&keys::pool_cooldown(&key))
                .await?;
            let interruptions: i64 = counts
                .iter()
                .filter(|c| c.key.sk() >= cutoff)
                .map(|c| c.body.interruptions)
                .sum();
            Ok::<_, StoreError>((
                (itype.clone(), zone.clone()),
                PoolRisk {
                    interruptions: u32::try_from(interruptions.max(0)).unwrap_or(u32::MAX),
                    cooling_down: cooldown.is_some_and(|c| c.body.until > now),
                },
            ))
        })
    });
    let mut risk = BTreeMap::new();
    for result in futures_util::future::join_all(lookups).await {
        let (pool, r) = result?;
        if r != PoolRisk::default() {
            risk.insert(pool, r);
        }
    }
    Ok(risk)
}

/// Counts observed interruptions on spot offerings and drops pools in cooldown.
pub fn apply_risk(offerings: &mut Vec<Offering>, risk: &BTreeMap<(String, String), PoolRisk>) {
    offerings.retain_mut(|o| {
        if !o.is_spot() {
            return true;
        }
        match risk.get(&(o.instance_type.clone(), o.zone.clone())) {
            Some(r) if r.cooling_down => false,
            Some(r) => {
                o.observed_interruptions = r.interruptions;
                true
            }
            None => true,
        }
    });
}

/// Stores the plan as the next revision; a concurrent run that took the same revision makes
/// this one take the one after.
async fn store_recommendation(
    deps: &Deps,
    request: &OptimizeRequest,
    policy: &Policy,
    head: &snapshots::SnapshotHead,
    plan: Plan,
    pools_in_cooldown: Vec<String>,
    now: OffsetDateTime,
) -> Result<(Recommendation, bool), OptimizeError> {
    let (tenant, cluster) = (&request.tenant_id, &request.cluster_id);
    let mut consolidation = plan.consolidation.clone();
    if let Some(c) = &mut consolidation {
        // Pod-level moves are kept for the wave that runs first; later waves are re-planned.
        let first: HashSet<usize> = c.waves.first().into_iter().flatten().copied().collect();
        for (i, step) in c.steps.iter_mut().enumerate() {
            if let Step::Remove { moves, .. } = step
                && !first.contains(&i)
            {
                moves.clear();
            }
        }
    }
    let mut right_sizing = plan.right_sizing.clone();
    if let Some(r) = &mut right_sizing {
        r.recommendations.truncate(STORED_LIST_CAP);
        // Ready ones first, the largest saving first, then those waiting for history.
        r.workloads.sort_by(|a, b| {
            (a.status != WorkloadStatus::Ready)
                .cmp(&(b.status != WorkloadStatus::Ready))
                .then(b.monthly_saving.total_cmp(&a.monthly_saving))
        });
        r.workloads.truncate(STORED_LIST_CAP);
    }
    let mut record = Recommendation {
        id: ulid::Ulid::new().to_string().to_ascii_lowercase(),
        revision: 0,
        tenant_id: tenant.clone(),
        cluster_id: cluster.clone(),
        trigger: request.trigger.clone(),
        mode: policy.mode,
        // Auto mode applies only a plan worth the disruption; the rest wait for approval.
        status: if policy.mode == PolicyMode::Auto && worth_rolling_out(&plan.summary) {
            RecommendationStatus::Applying
        } else {
            RecommendationStatus::Proposed
        },
        snapshot_id: head.id.clone(),
        created_at: now,
        cost_hr: plan.cost_hr,
        summary: plan.summary.clone(),
        node_mix: node_mix(&plan),
        unschedulable: plan
            .unschedulable
            .iter()
            .take(STORED_LIST_CAP)
            .cloned()
            .collect(),
        consolidation,
        right_sizing,
        pools_in_cooldown,
        action_ids: Vec::new(),
    };
    for _ in 0..3 {
        let latest = recommendations::newest(&deps.store, tenant, cluster).await?;
        let previous = latest.as_ref().map(|i| &i.body);
        record.revision = previous.map_or(0, |p| p.revision) + 1;
        let mix_changed = previous.is_none_or(|p| p.node_mix != record.node_mix);
        let item = Item::new(
            keys::recommendation(tenant, cluster, record.revision),
            record.clone(),
        );
        match deps.store.put(&item, PutCondition::IfAbsent).await {
            Ok(()) => return Ok((record, mix_changed)),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(StoreError::AlreadyExists {
        pk: keys::tenant_partition(tenant),
        sk: keys::recommendations_prefix(cluster),
    }
    .into())
}

/// Tells the tenant of a plan whose node mix is new and saves money; a re-plan to the same mix
/// every hour is not news.
async fn announce(deps: &Deps, record: &Recommendation) {
    let summary = &record.summary;
    let savings = summary.monthly_savings.unwrap_or(0.0);
    let what = match record.status {
        RecommendationStatus::Proposed => "waiting for approval",
        RecommendationStatus::Applying => "being applied (auto mode)",
    };
    let notification = Notification {
        tenant_id: record.tenant_id.clone(),
        event_type: "recommendation_ready".into(),
        severity: Severity::Info,
        cluster_id: Some(record.cluster_id.clone()),
        labels: BTreeMap::from([
            ("savings".to_owned(), format!("${savings:.2}/month")),
            ("revision".to_owned(), record.revision.to_string()),
        ]),
        title: format!(
            "Plan r{} for {} saves ${savings:.2}/month",
            record.revision, record.cluster_id
        ),
        body: format!(
            "{} nodes ({} spot), ${:.2}/month, risk {:.0}/100; {what}.",
            summary.nodes, summary.spot_nodes, summary.monthly_cost, summary.risk_score
        ),
        links: Vec::new(),
        occurred_at: record.created_at,
        dedup_key: format!("recommendation-{}-r{}", record.cluster_id, record.revision),
    };
    deps.notifications.notify(&notification).await;
}

#[cfg(test)]
mod tests;
