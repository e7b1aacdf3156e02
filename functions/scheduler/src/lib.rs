//! Scheduler function, invoked every minute: puts clusters to sleep and wakes them as their
//! hibernation schedules say, advances plan rollouts and right-sizing changes, and starts the
//! scheduled runs that are due.
//!
//! Each cluster and each schedule is handled on its own: one that fails is logged and counted,
//! the others go on, and the next minute tries again from the stored state.

pub mod agents;
pub mod hibernate;
pub mod resize;
pub mod rollout;

use aws_config::SdkConfig;
use serde::Serialize;
use spotwise_aws::cross_account::CrossAccount;
use spotwise_aws::queue::Queue;
use spotwise_aws::{Bucket, Vault};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::messages::{RunRef, ScheduleTrigger};
use spotwise_core::{Classify, Disposition};
use spotwise_schedule::Zone;
use spotwise_schedule::model::{RunRecord, RunState, ScheduleStatus, ScheduledRun};
use spotwise_store::Query;
use spotwise_store::keys;
use spotwise_store::runs::{self, RunError, RunOutcome, RunQueues};
use spotwise_store::{Store, StoreError};
use time::OffsetDateTime;
use tracing::{info, warn};

pub struct Config {
    pub common: CommonConfig,
    pub notifications_queue_url: String,
    pub optimize_queue_url: String,
    pub cost_queue_url: String,
    pub discovery_queue_url: String,
    /// The KMS key cluster secrets are sealed with (hibernation signs its actions).
    pub secrets_key_id: String,
    /// The bucket cluster snapshots are read from (hibernation sizes what it puts to sleep).
    pub snapshot_bucket: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            optimize_queue_url: env.required("OPTIMIZE_QUEUE_URL")?,
            cost_queue_url: env.required("COST_QUEUE_URL")?,
            discovery_queue_url: env.required("DISCOVERY_QUEUE_URL")?,
            secrets_key_id: env.required("SECRETS_KEY_ID")?,
            snapshot_bucket: env.required("SNAPSHOT_BUCKET")?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub sqs: aws_sdk_sqs::Client,
    pub notifications: Queue,
    pub run_queues: RunQueues,
    pub accounts: CrossAccount,
    pub vault: Vault,
    pub snapshots: Bucket,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let queue = |url: &str| Queue::new(sqs.clone(), url);
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            notifications: queue(&config.notifications_queue_url),
            run_queues: RunQueues {
                optimize: queue(&config.optimize_queue_url),
                cost: queue(&config.cost_queue_url),
                discovery: queue(&config.discovery_queue_url),
            },
            accounts: CrossAccount::new(sdk.clone(), "spotwise-scheduler"),
            vault: Vault::new(sdk, &config.secrets_key_id),
            snapshots: Bucket::new(sdk, &config.snapshot_bucket),
            sqs,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Classify for SchedulerError {
    fn disposition(&self) -> Disposition {
        match self {
            SchedulerError::Store(e) => e.disposition(),
            SchedulerError::Run(e) => e.disposition(),
        }
    }
}

/// Why an action on a customer's cluster (hibernation, a rollout) did not happen this tick.
#[derive(Debug, thiserror::Error)]
pub enum ClusterActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dispatch(#[from] spotwise_store::actions::DispatchError),
    #[error("{0}")]
    Aws(#[from] spotwise_aws::AwsFailure),
    #[error("assuming the account's role: {0}")]
    Link(#[from] spotwise_aws::cross_account::LinkError),
    #[error("{0}")]
    Invalid(String),
}

/// The SDK configuration of the customer's role, in the account and region `cluster` runs in.
pub async fn customer_config(
    deps: &Deps,
    tenant: &spotwise_core::TenantId,
    cluster: &spotwise_core::domain::Cluster,
) -> Result<SdkConfig, ClusterActionError> {
    let account = deps
        .store
        .get::<spotwise_core::domain::Account>(&keys::account(tenant, &cluster.account_id))
        .await?
        .ok_or_else(|| {
            ClusterActionError::Invalid(format!("account {} is not linked", cluster.account_id))
        })?;
    Ok(deps
        .accounts
        .config_in(
            &account.body.role_arn,
            &account.body.external_id,
            &cluster.region,
        )
        .await?)
}

/// Work items (rollouts, right-sizing changes) advanced at once by one tick.
const ADVANCE_CONCURRENCY: usize = 16;

/// Advances each item, a few at once, each on its own: `name: status` of those that moved,
/// and `what name: error` of those that could not (logged; the next tick tries again).
async fn advance_each<T, F, Fut>(
    items: Vec<T>,
    what: &str,
    advance: F,
) -> (Vec<String>, Vec<String>)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = (String, Result<&'static str, ClusterActionError>)>,
{
    use futures_util::StreamExt;
    let outcomes: Vec<(String, Result<&'static str, ClusterActionError>)> =
        futures_util::stream::iter(items)
            .map(advance)
            .buffer_unordered(ADVANCE_CONCURRENCY)
            .collect()
            .await;
    let (mut advanced, mut failures) = (Vec::new(), Vec::new());
    for (name, outcome) in outcomes {
        match outcome {
            Ok(status) => advanced.push(format!("{name}: {status}")),
            Err(err) => {
                warn!(%what, item = %name, error = %err, "not advanced");
                failures.push(format!("{what} {name}: {err}"));
            }
        }
    }
    (advanced, failures)
}

/// What one tick did.
#[derive(Debug, Default, Serialize)]
pub struct Tick {
    pub hibernation: hibernate::Summary,
    pub rollouts: rollout::Summary,
    pub resizes: resize::Summary,
    pub runs_started: usize,
    pub runs_skipped: usize,
    pub runs_timed_out: usize,
    /// Clusters whose agent was declared offline by this tick.
    pub agents_offline: Vec<spotwise_core::ClusterId>,
    pub failures: Vec<String>,
}

pub async fn handle(deps: &Deps, _trigger: ScheduleTrigger) -> Result<Tick, SchedulerError> {
    tick(deps, OffsetDateTime::now_utc()).await
}

pub async fn tick(deps: &Deps, now: OffsetDateTime) -> Result<Tick, SchedulerError> {
    let mut tick = Tick {
        // Boxed: the transitions' futures are too deep to nest inline.
        hibernation: Box::pin(hibernate::tick(deps, now)).await?,
        ..Tick::default()
    };
    tick.rollouts = Box::pin(rollout::tick(deps, now)).await?;
    tick.resizes = Box::pin(resize::tick(deps, now)).await?;
    Box::pin(start_due_runs(deps, now, &mut tick)).await?;
    match Box::pin(agents::flag_silent(deps, now)).await {
        Ok(offline) => tick.agents_offline = offline,
        Err(err) => {
            warn!(error = %err, "silent agents not checked");
            tick.failures.push(format!("agent heartbeats: {err}"));
        }
    }
    info!(
        slept = tick.hibernation.slept.len(),
        woke = tick.hibernation.woke.len(),
        runs_started = tick.runs_started,
        failures = tick.failures.len() + tick.hibernation.failures.len(),
        "scheduler tick"
    );
    Ok(tick)
}

/// Starts every active schedule whose next run time has come. Advancing `next_run_at` under
/// the optimistic lock is the claim, so overlapping ticks never start a run twice.
async fn start_due_runs(
    deps: &Deps,
    now: OffsetDateTime,
    tick: &mut Tick,
) -> Result<(), SchedulerError> {
    // `~` sorts after every character of a tenant or schedule id.
    let due = deps
        .store
        .query_all::<ScheduledRun>(
            &Query::gsi1(keys::DUE_SCHEDULES_PARTITION).up_to(format!("{}#~", runs::sortable(now))),
        )
        .await?;
    for item in due {
        let schedule_id = item.body.id.clone();
        if let Err(err) = start_one(deps, item, now, tick).await {
            warn!(schedule = %schedule_id, error = %err, "scheduled run not started");
            tick.failures.push(format!("schedule {schedule_id}: {err}"));
        }
    }
    Ok(())
}

async fn start_one(
    deps: &Deps,
    item: spotwise_store::Item<ScheduledRun>,
    now: OffsetDateTime,
    tick: &mut Tick,
) -> Result<(), SchedulerError> {
    let mut schedule = item.body.clone();
    if schedule.status != ScheduleStatus::Active {
        return Ok(());
    }
    let next = Zone::new(&schedule.settings.time_zone)
        .ok()
        .zip(schedule.cron().ok())
        .and_then(|(zone, cron)| cron.next_after(&zone, now));
    schedule.next_run_at = next;
    schedule.updated_at = now;
    match deps
        .store
        .update_versioned(&runs::schedule_item(schedule.clone(), item.version))
        .await
    {
        Ok(_) => {}
        // Another tick claimed this occurrence.
        Err(StoreError::StaleVersion { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    // One run at a time: a run still going skips this occurrence, one gone quiet times out.
    if let Some(last) = &schedule.last_run_id {
        let key = keys::run(&schedule.tenant_id, &schedule.id, last);
        if let Some(run) = deps.store.get::<RunRecord>(&key).await?
            && run.body.state == RunState::Running
        {
            if now - run.body.started_at < runs::RUN_TIMEOUT {
                info!(schedule = %schedule.id, run = %last, "previous run still going; occurrence skipped");
                tick.runs_skipped += 1;
                return Ok(());
            }
            let previous = RunRef {
                tenant_id: schedule.tenant_id.clone(),
                schedule_id: schedule.id.clone(),
                run_id: last.clone(),
            };
            runs::finish(
                &deps.store,
                &deps.notifications,
                &previous,
                RunOutcome::TimedOut,
                now,
            )
            .await?;
            tick.runs_timed_out += 1;
            let refreshed = deps
                .store
                .get::<ScheduledRun>(&keys::scheduled_run(&schedule.tenant_id, &schedule.id))
                .await?;
            if refreshed.is_none_or(|s| s.body.status != ScheduleStatus::Active) {
                return Ok(());
            }
        }
    }
    runs::start(
        &deps.store,
        &deps.run_queues,
        &deps.notifications,
        &schedule,
        "schedule",
        now,
    )
    .await?;
    tick.runs_started += 1;
    Ok(())
}

#[cfg(test)]
mod tests;
