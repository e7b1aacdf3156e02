//! Scheduled runs: starting one (a run record, then the request to the function that does the
//! work) and recording how it ended, which pauses the schedule after too many failures in a
//! row. The scheduler and the API's manual trigger start runs; the optimizer, discovery and
//! cost functions finish them.

use crate::keys::{self, Gsi1Key};
use spotwise_core::domain::{Cluster, Notification, Severity};
use spotwise_core::messages::{CostRequest, DiscoverAccount, OptimizeRequest, RunRef};
use spotwise_core::{Classify, ClusterId, Disposition};
use spotwise_schedule::model::{RunKind, RunRecord, RunState, ScheduleStatus, ScheduledRun};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{Item, PutCondition, Store, StoreError};
use spotwise_aws::Queue;
use spotwise_aws::queue::QueueError;

/// A run without an outcome after this long is counted as failed.
pub const RUN_TIMEOUT: time::Duration = time::Duration::hours(1);
/// Run records are kept this long.
const RUN_RETENTION: time::Duration = time::Duration::days(90);
/// Optimistic-lock retries when a schedule changes under us.
const UPDATE_ATTEMPTS: usize = 4;

/// Where each kind of run is sent.
pub struct RunQueues {
    pub optimize: Queue,
    pub cost: Queue,
    pub discovery: Queue,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cluster {0} is not known")]
    UnknownCluster(ClusterId),
}

impl Classify for RunError {
    fn disposition(&self) -> Disposition {
        match self {
            RunError::Store(e) => e.disposition(),
            RunError::Queue(e) => e.disposition(),
            RunError::UnknownCluster(_) => Disposition::NonRetryable,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded(String),
    Failed(String),
    TimedOut,
}

/// Fixed-width UTC time, so string order is time order in the due index.
pub fn sortable(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The stored form of a schedule: active ones with a next run are in the due index. `version`
/// is the stored version an update replaces; a new schedule (0) is written at version 1.
pub fn schedule_item(schedule: ScheduledRun, version: u64) -> Item<ScheduledRun> {
    let index: Option<Gsi1Key> = match (schedule.status, schedule.next_run_at) {
        (ScheduleStatus::Active, Some(next)) => Some(keys::due_schedules_index(
            &sortable(next),
            &schedule.tenant_id,
            &schedule.id,
        )),
        _ => None,
    };
    let key = keys::scheduled_run(&schedule.tenant_id, &schedule.id);
    let mut item = Item::new(key, schedule);
    item.version = version.max(1);
    match index {
        Some(index) => item.with_gsi1(index),
        None => item,
    }
}

/// Starts a run of `schedule`: records it as running, then sends the request. A request that
/// cannot be sent ends the run as failed.
pub async fn start(
    store: &Store,
    queues: &RunQueues,
    notifications: &Queue,
    schedule: &ScheduledRun,
    trigger: &str,
    now: OffsetDateTime,
) -> Result<RunRecord, RunError> {
    let run_id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let record = RunRecord {
        run_id: run_id.clone(),
        schedule_id: schedule.id.clone(),
        tenant_id: schedule.tenant_id.clone(),
        cluster_id: schedule.settings.cluster_id.clone(),
        kind: schedule.settings.kind,
        trigger: trigger.to_owned(),
        state: RunState::Running,
        started_at: now,
        finished_at: None,
        duration_ms: None,
        detail: None,
    };
    store
        .put(
            &Item::new(
                keys::run(&schedule.tenant_id, &schedule.id, &run_id),
                record.clone(),
            )
            .expiring_at(now + RUN_RETENTION),
            PutCondition::IfAbsent,
        )
        .await?;
    let run = RunRef {
        tenant_id: schedule.tenant_id.clone(),
        schedule_id: schedule.id.clone(),
        run_id,
    };
    if let Err(err) = send(store, queues, schedule, &run, now).await {
        let reason = format!("could not start: {err}");
        finish(store, notifications, &run, RunOutcome::Failed(reason), now).await?;
        return Err(err);
    }
    remember(store, &run, now).await?;
    info!(schedule = %schedule.id, run = %run.run_id, kind = ?schedule.settings.kind, %trigger, "run started");
    Ok(record)
}

/// Points the schedule at its newest run, so the next occurrence can see whether it is done.
async fn remember(store: &Store, run: &RunRef, now: OffsetDateTime) -> Result<(), StoreError> {
    let key = keys::scheduled_run(&run.tenant_id, &run.schedule_id);
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(item) = store.get::<ScheduledRun>(&key).await? else {
            return Ok(());
        };
        let mut schedule = item.body;
        schedule.last_run_id = Some(run.run_id.clone());
        schedule.updated_at = now;
        match store
            .update_versioned(&schedule_item(schedule, item.version))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::StaleVersion { .. }) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

async fn send(
    store: &Store,
    queues: &RunQueues,
    schedule: &ScheduledRun,
    run: &RunRef,
    now: OffsetDateTime,
) -> Result<(), RunError> {
    let (tenant_id, cluster_id) = (
        schedule.tenant_id.clone(),
        schedule.settings.cluster_id.clone(),
    );
    match schedule.settings.kind {
        RunKind::Optimize => {
            let request = OptimizeRequest {
                tenant_id,
                cluster_id,
                trigger: format!("schedule:{}", schedule.id),
                scheduled: Some(run.clone()),
            };
            queues.optimize.send(&request, None).await?;
        }
        RunKind::Report => {
            let request = CostRequest::Report {
                tenant_id,
                cluster_id,
                month: format!("{:04}-{:02}", now.year(), u8::from(now.month())),
                scheduled: Some(run.clone()),
            };
            queues.cost.send(&request, None).await?;
        }
        RunKind::Discovery => {
            let cluster = store
                .get::<Cluster>(&keys::cluster(&tenant_id, &cluster_id))
                .await?
                .ok_or_else(|| RunError::UnknownCluster(cluster_id.clone()))?;
            let request = DiscoverAccount {
                tenant_id,
                account_id: cluster.body.account_id,
                run_id: run.run_id.clone(),
                scheduled: Some(run.clone()),
            };
            queues.discovery.send(&request, None).await?;
        }
    }
    Ok(())
}

/// Records how a run ended and what it means for its schedule. A run already finished (a
/// redelivered request) is left alone. The schedule is paused, and the tenant told, when this
/// failure makes `pause_after` in a row.
pub async fn finish(
    store: &Store,
    notifications: &Queue,
    run: &RunRef,
    outcome: RunOutcome,
    now: OffsetDateTime,
) -> Result<(), RunError> {
    let key = keys::run(&run.tenant_id, &run.schedule_id, &run.run_id);
    let Some(mut record) = store.get::<RunRecord>(&key).await? else {
        warn!(run = %run.run_id, "outcome for an unknown run ignored");
        return Ok(());
    };
    if record.body.state != RunState::Running {
        return Ok(());
    }
    let (state, detail) = match &outcome {
        RunOutcome::Succeeded(detail) => (RunState::Succeeded, detail.clone()),
        RunOutcome::Failed(detail) => (RunState::Failed, detail.clone()),
        RunOutcome::TimedOut => (
            RunState::TimedOut,
            format!("no outcome within {} minutes", RUN_TIMEOUT.whole_minutes()),
        ),
    };
    record.body.state = state;
    record.body.finished_at = Some(now);
    record.body.duration_ms =
        u64::try_from((now - record.body.started_at).whole_milliseconds()).ok();
    record.body.detail = Some(detail.chars().take(500).collect());
    match store.update_versioned(&record).await {
        Ok(_) => {}
        // Someone else recorded the outcome first.
        Err(StoreError::StaleVersion { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    let failed = state != RunState::Succeeded;
    for _ in 0..UPDATE_ATTEMPTS {
        let schedule_key = keys::scheduled_run(&run.tenant_id, &run.schedule_id);
        let Some(item) = store.get::<ScheduledRun>(&schedule_key).await? else {
            return Ok(());
        };
        let mut schedule = item.body;
        schedule.consecutive_failures = if failed {
            schedule.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        let pausing = failed
            && schedule.status == ScheduleStatus::Active
            && schedule.consecutive_failures >= schedule.settings.pause_after;
        if pausing {
            schedule.status = ScheduleStatus::Paused;
            schedule.paused_reason = Some(format!(
                "paused after {} failed runs in a row; the last: {detail}",
                schedule.consecutive_failures
            ));
        }
        schedule.updated_at = now;
        let notice = pausing.then(|| paused_notification(&schedule, &detail, now));
        match store
            .update_versioned(&schedule_item(schedule, item.version))
            .await
        {
            Ok(_) => {
                if let Some(notice) = notice {
                    warn!(schedule = %run.schedule_id, "schedule paused after repeated failures");
                    notifications.send(&notice, None).await?;
                }
                return Ok(());
            }
            Err(StoreError::StaleVersion { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(StoreError::StaleVersion {
        pk: keys::tenant_partition(&run.tenant_id),
        sk: run.schedule_id.clone(),
        expected: 0,
    }
    .into())
}

fn paused_notification(schedule: &ScheduledRun, detail: &str, now: OffsetDateTime) -> Notification {
    Notification {
        tenant_id: schedule.tenant_id.clone(),
        event_type: "schedule_paused".into(),
        severity: Severity::Warning,
        cluster_id: Some(schedule.settings.cluster_id.clone()),
        labels: [
            ("schedule_id".to_owned(), schedule.id.clone()),
            (
                "kind".to_owned(),
                schedule.settings.kind.as_str().to_owned(),
            ),
        ]
        .into(),
        title: format!("Scheduled run \"{}\" paused", schedule.settings.name),
        body: format!(
            "{} runs in a row failed, so the schedule is paused until resumed. The last: {detail}",
            schedule.consecutive_failures
        ),
        links: vec![],
        occurred_at: now,
        dedup_key: format!("schedule-paused:{}:{}", schedule.id, now.unix_timestamp()),
    }
}

/// The run outcome of a unit of work: `describe` says whether a result is a success. A
/// retryable error has none yet: SQS redelivers the request, and a run that never ends times
/// out.
pub fn outcome_of<T, E: Classify + std::fmt::Display>(
    result: &Result<T, E>,
    describe: impl Fn(&T) -> Result<String, String>,
) -> Option<RunOutcome> {
    match result {
        Ok(value) => Some(match describe(value) {
            Ok(detail) => RunOutcome::Succeeded(detail),
            Err(reason) => RunOutcome::Failed(reason),
        }),
        Err(err) if err.disposition() == Disposition::NonRetryable => {
            Some(RunOutcome::Failed(err.to_string()))
        }
        Err(_) => None,
    }
}

/// Finishes a scheduled run from the function that did the work, logging (not failing the
/// work) when the outcome cannot be recorded.
pub async fn report(
    store: &Store,
    notifications: &Queue,
    run: Option<&RunRef>,
    outcome: Option<RunOutcome>,
) {
    let (Some(run), Some(outcome)) = (run, outcome) else {
        return;
    };
    if let Err(err) = finish(
        store,
        notifications,
        run,
        outcome,
        OffsetDateTime::now_utc(),
    )
    .await
    {
        warn!(run = %run.run_id, error = %err, "run outcome not recorded");
    }
}
